"""`python -m dynamicrl.services.controller` == `dynamicrl service controller`."""

import sys

from dynamicrl.clients.cli import main

main(["service", "controller", *sys.argv[1:]])
