"""A handler's "I will answer later" (a pause, a waiting patch, a checkpoint, a stop after one).

Its own module so that the handler modules and app.py can share it without importing each other.
The controller keeps the request's route until something calls ``Controller.answer``.
"""

DEFER = object()
