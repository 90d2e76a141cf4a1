"""`python -m dynamicrl.services.previewer` == `dynamicrl service previewer`."""

from dynamicrl.services.launch import main

main("previewer")
