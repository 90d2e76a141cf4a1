"""`python -m dynamicrl.services.learner` == `dynamicrl service learner`."""

import sys

from dynamicrl.clients.cli import main

main(["service", "learner", *sys.argv[1:]])
