"""A handler's "I will answer later" (a pause, a waiting patch, a checkpoint, a stop after one).

Its own module so that the handler modules and app.py can share it without importing each other.
The controller keeps the request's route until something calls ``Controller.answer``.
"""

from enum import Enum
from typing import Final


class Defer(Enum):
    """The type of ``DEFER`` alone (an enum, so that a handler's return type can name it)."""

    DEFER = "defer"


DEFER: Final = Defer.DEFER
