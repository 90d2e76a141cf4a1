"""Joining a run and staying alive in it.

Services talk to the controller over one DEALER socket connected to the
controller's ROUTER (the command socket). The order is: ``RegisterRequest`` ->
``RegisterReply`` (run id, rank, resolved config), heavy start-up, ``Ready``,
then the controller sends ``RunStart`` to every member once all expected members
are ready, so no one trains before the logger listens. ``Heartbeat`` keeps a
member healthy; ``Goodbye`` leaves cleanly.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import LARGE, SMALL, LogicalTime, Message, NDArray, ParamValue, Position, Role
from .checkpoint import CheckpointPart

#: A member's name: it names the member's files too (``<name>.npz`` in a checkpoint), so it is a short
#: plain word (``learner.1``, ``envrunner.2``), never a path: no ``/`` or ``\\``, no leading dot.
MEMBER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MemberName = Annotated[
    str,
    Field(
        pattern=MEMBER_NAME_PATTERN,
        description="1-64 characters: letters, digits, '_', '.', '-'; starting with a letter or digit",
    ),
]


class RegisterRequest(Message):
    """Service -> controller (DEALER->ROUTER). Reply: RegisterReply or ErrorReply."""

    TYPE: ClassVar[str] = "membership.register_request"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    service: MemberName
    role: Role
    rank: int | None = Field(default=None, ge=0, description="requested rank (env-runners)")
    pid: int = Field(ge=0)
    host: str = ""


class RegisterReply(Message):
    """Controller -> service. The config is the controller's resolved config: one source of truth."""

    TYPE: ClassVar[str] = "membership.register_reply"
    run_id: str
    run_dir: str
    rank: int = Field(ge=0)
    config: dict[str, Any]
    resumed_from: LogicalTime | None = Field(default=None, description="set when the run continues from a checkpoint")


class Ready(Message):
    """Service -> controller: start-up done (env built, policy built, subscriptions live)."""

    TYPE: ClassVar[str] = "membership.ready"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    service: str


class ApplyPatch(Message):
    """Controller -> owner: apply these (validated) values at their apply points.

    Not before ``at`` (and, for the learner, ``at_minibatch``) when given: a
    scheduled patch, or a replayed journal entry at its exact logical time.
    While paused it waits for resume. Each application -> PatchApplied.
    """

    TYPE: ClassVar[str] = "membership.apply_patch"
    patch_id: str
    author: str
    changes: dict[str, ParamValue]
    at: LogicalTime | None = None
    at_minibatch: int | None = Field(default=None, ge=0)


class RunStart(Message):
    """Controller -> each member once every expected member is ready: train now.

    ``patches`` are the member's replayed journal entries, delivered with the start
    so none can arrive after the logical time it must apply at.
    """

    TYPE: ClassVar[str] = "membership.run_start"
    MAX_PAYLOAD: ClassVar[int] = LARGE
    envrunners: int = Field(ge=1, description="number of env-runners in the run (ranks 0..n-1)")
    members: list[str]
    patches: list[ApplyPatch] = Field(default_factory=list)
    restore: CheckpointPart | None = Field(default=None, description="on resume: the member's state to continue from")


class PauseCommand(Message):
    """Controller -> every member: stop at your next safe point, then report BarrierReached."""

    TYPE: ClassVar[str] = "membership.pause"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    pause_id: str
    scenes: bool = Field(
        default=False, description="env-runners: send your sub-envs' scenes with the report (a previewer renders them)"
    )


class Scene(BaseModel):
    """One sub-env's simulator state at a barrier: enough to draw it, not to continue from it."""

    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, max_length=128, description="the env-runner")
    index: int = Field(ge=0, description="the sub-env's index in that env-runner's vector")
    kind: Literal["mujoco", "classic"] = Field(description="how ``state`` is read back (see core/envstate.py)")
    state: NDArray = Field(description="MuJoCo: mj_getState(mjSTATE_INTEGRATION); classic control: ``env.state``")


class BarrierReached(Message):
    """Member -> controller: standing at a safe point for ``pause_id``; nothing advances."""

    TYPE: ClassVar[str] = "membership.barrier_reached"
    pause_id: str
    position: Position
    scenes: list[Scene] = Field(default_factory=list, max_length=64, description="asked for by PauseCommand")


class RenderPreviews(Message):
    """Controller -> the previewer, once the barrier is complete: draw these scenes as pause ``pause``'s
    previews. The pause does not wait for them; the previewer announces them with PreviewsSaved."""

    TYPE: ClassVar[str] = "membership.render_previews"
    pause: int = Field(ge=1, description="the run's pause number: runs/<id>/previews/pause-<pause>/")
    ltime: LogicalTime = Field(description="the latest position at the barrier")
    scenes: list[Scene] = Field(min_length=1, max_length=256)


class ResumeCommand(Message):
    """Controller -> every member: leave the barrier and continue exactly where you stopped."""

    TYPE: ClassVar[str] = "membership.resume"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    pause_id: str


class PatchApplied(Message):
    """Owner -> controller: applied (part of) a patch here; values old -> new."""

    TYPE: ClassVar[str] = "membership.patch_applied"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    patch_id: str
    author: str = ""
    position: Position
    changes: dict[str, tuple[ParamValue, ParamValue]]


class Heartbeat(Message):
    """Service -> controller, every heartbeat interval, from the service's safe points."""

    TYPE: ClassVar[str] = "membership.heartbeat"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    service: str
    ltime: LogicalTime | None = None
    missed: int = Field(default=0, ge=0, description="bus messages its subscriptions lost so far (sequence gaps)")
    cpu_percent: float | None = Field(
        default=None, ge=0, description="its CPU use since its last heartbeat (100: one core)"
    )
    rss_mb: float | None = Field(default=None, ge=0, description="its resident memory in MiB")
    refused_handshakes: int = Field(
        default=0, ge=0, description="connections to the sockets it binds (the learner's data socket) refused so far"
    )


class Goodbye(Message):
    """Service -> controller: leaving cleanly (finished, stopped or interrupted)."""

    TYPE: ClassVar[str] = "membership.goodbye"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    service: str
    reason: str = ""
    finished: bool = Field(default=False, description="it left because training is complete (not a failure)")


class StopCommand(Message):
    """Controller -> service: finish at the next safe point and exit."""

    TYPE: ClassVar[str] = "membership.stop"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    reason: str = ""


class TrainingDone(Message):
    """Learner -> controller: the budget of env steps is spent; the controller stops the run."""

    TYPE: ClassVar[str] = "membership.training_done"
    MAX_PAYLOAD: ClassVar[int] = SMALL
    ltime: LogicalTime
