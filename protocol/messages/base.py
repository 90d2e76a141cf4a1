"""Base model for every message and the array field type.

Every message is a strict pydantic model (unknown fields are refused) tagged by
a dotted ``TYPE`` that doubles as its bus topic (see ``Message.topic``), so a subscriber can take a
whole family by prefix (``metrics.``). numpy arrays are declared as
``NDArray`` fields: the codec moves them as raw frames, never pickled.

Importing the messages costs neither numpy nor the building of every model's validator:
numpy loads with the first array, and a model is built the first time it is used, so a
client that sends one request (``dynamicrl status``) pays for that request only.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

#: dtypes allowed on the wire, as numpy spells them (``np.dtype(t).str``) for bool, (u)int8..64 and float16..64;
#: anything else (object, void, datetime...) is refused.
_ORDER = "<" if sys.byteorder == "little" else ">"
ARRAY_DTYPES = frozenset(["|b1", "|i1", "|u1", *(f"{_ORDER}{kind}{size}" for kind in "iuf" for size in (2, 4, 8))])

if TYPE_CHECKING:
    from numpy import ndarray
else:
    ndarray = Any  # the validator below checks the type


def _validate_array(value: Any) -> ndarray:
    import numpy as np

    if not isinstance(value, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(value).__name__}")
    if value.dtype.str not in ARRAY_DTYPES:
        raise ValueError(f"array dtype {value.dtype} is not allowed on the wire")
    return value


NDArray = Annotated[
    ndarray,
    PlainValidator(_validate_array),
    PlainSerializer(lambda a: a, return_type=Any),
    WithJsonSchema(
        {
            "type": "object",
            "description": "numpy array sent as an extra raw frame: "
            '{"__ndarray__": frame index after the payload, "dtype": numpy dtype string '
            '(e.g. "<f4"), "shape": [dims]}',
            "required": ["__ndarray__", "dtype", "shape"],
            "additionalProperties": False,
            "properties": {
                "__ndarray__": {"type": "integer", "minimum": 0},
                "dtype": {"type": "string", "enum": sorted(ARRAY_DTYPES)},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
        }
    ),
]


class Message(BaseModel):
    """A typed event, command or reply. Subclasses set ``TYPE``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, defer_build=True)
    TYPE: ClassVar[str]
    #: Largest msgpack payload (arrays excluded) the codec accepts for this type: a request or a
    #: member's small report gets ``SMALL``, so no peer can make the controller hold, parse or echo
    #: megabytes; what carries a journal, a config or a checkpoint's metadata gets ``LARGE``.
    MAX_PAYLOAD: ClassVar[int] = 1 << 20

    def topic(self) -> str:
        """The bus topic (first frame). ``TYPE`` by default; a message that needs finer
        subscription (``ExternalSample``: ``external.<stream>``) overrides it."""
        return self.TYPE


SMALL = 64 << 10
LARGE = 4 << 20


class LogicalTime(BaseModel):
    """The run's clock: it, not the wall clock, orders pauses, patches and checkpoints."""

    model_config = ConfigDict(extra="forbid", strict=True)
    iteration: int = Field(ge=0)
    env_step: int = Field(ge=0)


#: The integers every peer can carry (msgpack's, numpy's and torch's int64).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: An integer msgpack can carry (a larger one is read as a float where one may be).
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
#: A hyperparameter value on the wire (JSON-like scalars only).
ParamValue = bool | Int64 | float | str | None


class Position(BaseModel):
    """Where a service stands: its logical time, and for the learner the minibatch within the update."""

    model_config = ConfigDict(extra="forbid")
    service: str
    ltime: LogicalTime
    minibatch: int | None = Field(default=None, ge=0, description="gradient steps done in the current update")


class Role(str, Enum):
    CONTROLLER = "controller"
    LEARNER = "learner"
    ENVRUNNER = "envrunner"
    LOGGER = "logger"
    PREVIEWER = "previewer"


class ErrorCode(str, Enum):
    """Why a request failed. Clients decide to retry or give up from this alone."""

    BAD_MESSAGE = "bad_message"  # undecodable / invalid frame: fix the sender, do not retry
    UNEXPECTED = "unexpected"  # valid message that this socket does not handle
    CONFLICT = "conflict"  # an exclusive command is already running; retry later
    REJECTED = "rejected"  # refused by validation or policy; nothing changed; do not retry as is
    TIMEOUT = "timeout"  # the controller gave up waiting on a member; the run continues
    INTERNAL = "internal"  # handler failed; the service is still running
