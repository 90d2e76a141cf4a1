"""`python -m dynamicrl.services.controller` == `dynamicrl service controller`."""

from dynamicrl.services.launch import main

main("controller")
