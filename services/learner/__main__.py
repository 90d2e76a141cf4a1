"""`python -m dynamicrl.services.learner` == `dynamicrl service learner`."""

from dynamicrl.services.launch import main

main("learner")
