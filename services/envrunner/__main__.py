"""`python -m dynamicrl.services.envrunner` == `dynamicrl service envrunner`."""

from dynamicrl.services.launch import main

main("envrunner")
