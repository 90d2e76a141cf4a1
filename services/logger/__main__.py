"""`python -m dynamicrl.services.logger` == `dynamicrl service logger`."""

from dynamicrl.services.launch import main

main("logger")
