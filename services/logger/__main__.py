"""`python -m dynamicrl.services.logger` == `dynamicrl service logger`."""

import sys

from dynamicrl.clients.cli import main

main(["service", "logger", *sys.argv[1:]])
