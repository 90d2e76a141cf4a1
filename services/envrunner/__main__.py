"""`python -m dynamicrl.services.envrunner` == `dynamicrl service envrunner`."""

import sys

from dynamicrl.clients.cli import main

main(["service", "envrunner", *sys.argv[1:]])
