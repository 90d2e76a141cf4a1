"""`python -m dynamicrl.clients.cli` == `dynamicrl`."""

from dynamicrl.clients.cli import main

main()
