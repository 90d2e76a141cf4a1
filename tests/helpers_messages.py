"""A valid sample of every wire message, and a deep comparison for decoded dumps.

``SAMPLES`` must have one entry per key of ``MESSAGE_TYPES``; the codec tests
fail when a message type is added without a sample here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dynamicrl.protocol.messages import (
    ApplyPatch,
    BarrierReached,
    CheckpointCommand,
    CheckpointDone,
    CheckpointPart,
    CheckpointReply,
    CheckpointRequest,
    CheckpointSaved,
    EpisodeStats,
    ErrorCode,
    ErrorReply,
    ExternalSample,
    Goodbye,
    Health,
    Heartbeat,
    HistoryReply,
    HistoryRequest,
    JournalEntry,
    LogicalTime,
    Message,
    MonitorReport,
    MonitorReportReply,
    MonitorStatus,
    ParamsReply,
    ParamsRequest,
    PatchApplied,
    PatchEvent,
    PatchReply,
    PatchRequest,
    PatchStatus,
    PauseCommand,
    PauseReply,
    PauseRequest,
    PolicyRequest,
    PolicyWeights,
    Position,
    PreviewsSaved,
    ProcessSample,
    Ready,
    RegisterReply,
    RegisterRequest,
    RenderPreviews,
    ResumeCommand,
    ResumeReply,
    ResumeRequest,
    Role,
    Rollout,
    RunStart,
    RunState,
    RunStateChanged,
    SavedCheckpoint,
    Scene,
    ServiceStatus,
    StatusReply,
    StatusRequest,
    StopCommand,
    StopReply,
    StopRequest,
    SystemMetrics,
    TrainingDone,
    TrainMetrics,
    Tunable,
    ValueChange,
    VideoSaved,
)


def _scene(service: str, index: int) -> Scene:
    return Scene(service=service, index=index, kind="classic", state=np.array([0.01, -0.2, 0.03, 0.1 * index]))


def _rollout() -> Rollout:
    rng = np.random.default_rng(7)
    t, n, obs = 5, 3, 4
    return Rollout(
        rank=1,
        version=2,
        obs=rng.standard_normal((t, n, obs)).astype(np.float32),
        actions=rng.integers(0, 2, size=(t, n)).astype(np.int64),
        logprobs=rng.standard_normal((t, n)).astype(np.float32),
        values=rng.standard_normal((t, n)).astype(np.float32),
        rewards=np.ones((t, n), dtype=np.float32),
        dones=rng.integers(0, 2, size=(t, n)).astype(bool),
        trunc_values=np.zeros((t, n), dtype=np.float32),
        last_obs=rng.standard_normal((n, obs)).astype(np.float32),
        last_dones=np.array([False, True, False]),
        episode_returns=[12.0, 33.5],
        episode_lengths=[12, 34],
        collect_s=0.25,
    )


def _position(minibatch: int | None = None) -> Position:
    return Position(service="learner.1", ltime=LogicalTime(iteration=4, env_step=1024), minibatch=minibatch)


def _entry() -> JournalEntry:
    return JournalEntry(
        patch_id="a1",
        author="cli@me",
        service="learner.1",
        changes={"ppo.lr": ValueChange(old=2.5e-4, new=1e-4)},
        ltime=LogicalTime(iteration=4, env_step=1024),
        minibatch=2,
        time=1.5e9,
    )


def _checkpoint_part() -> CheckpointPart:
    return CheckpointPart(
        ckpt_id="c1",
        service="envrunner.2",
        ltime=_position().ltime,
        arrays={"obs": np.ones((2, 11)), "rng.actor": np.arange(16, dtype=np.uint8), "env.0.mj_state": np.zeros(30)},
        meta={
            "iteration": 4,
            "env_steps": 1024,
            "envs": [{"np_random": "{}", "elapsed_steps": 7, "kind": "mujoco"}],
            "pending_patches": [],
        },
    )


def _weights() -> PolicyWeights:
    rng = np.random.default_rng(3)
    return PolicyWeights(
        version=4,
        weights={
            "actor.0.weight": rng.standard_normal((8, 4)).astype(np.float32),
            "actor.0.bias": np.zeros(8, dtype=np.float32),
            "critic.log_std": np.array(-0.5, dtype=np.float64),
            "steps": np.array([1, 2, 3], dtype=np.int64),
        },
        done=True,
    )


SAMPLES: dict[str, Callable[[], Message]] = {
    RegisterRequest.TYPE: lambda: RegisterRequest(
        service="envrunner.1", role=Role.ENVRUNNER, rank=0, pid=1234, host="box"
    ),
    RegisterReply.TYPE: lambda: RegisterReply(
        run_id="run-1",
        run_dir="/tmp/run-1",
        rank=0,
        config={
            "run": {"seed": 1, "envrunners": "auto"},
            "algo": {"hidden_sizes": [64, 64], "lr": 2.5e-4},
            "env": {"kwargs": {}},
            "plugins": [],
            "dir": None,
        },
    ),
    Ready.TYPE: lambda: Ready(service="learner.0"),
    RunStart.TYPE: lambda: RunStart(envrunners=2, members=["learner.0", "envrunner.1", "envrunner.2"]),
    Heartbeat.TYPE: lambda: Heartbeat(
        service="learner.0", ltime=LogicalTime(iteration=3, env_step=4096), cpu_percent=97.5, rss_mb=412.3
    ),
    Goodbye.TYPE: lambda: Goodbye(service="envrunner.1", reason="SIGTERM"),
    StopCommand.TYPE: lambda: StopCommand(reason="training done"),
    TrainingDone.TYPE: lambda: TrainingDone(ltime=LogicalTime(iteration=10, env_step=150_000)),
    ErrorReply.TYPE: lambda: ErrorReply(code=ErrorCode.CONFLICT, message="busy"),
    StatusRequest.TYPE: lambda: StatusRequest(),
    StatusReply.TYPE: lambda: StatusReply(
        run_id="run-1",
        run_dir="/tmp/run-1",
        state=RunState.RUNNING,
        services=[
            ServiceStatus(service="learner.0", role=Role.LEARNER, rank=0, pid=42, health=Health.OK, last_seen_s=0.125)
        ],
        ltime=LogicalTime(iteration=2, env_step=2048),
        sps=1500.5,
        return_mean=None,
        total_env_steps=100_000,
        monitors=[
            MonitorStatus(
                name="watch.77",
                topics=["metrics.", "control."],
                received=310,
                missed=12,
                missed_by_sender={"learner.0": 12},
                last_report_s=1.25,
            )
        ],
    ),
    MonitorReport.TYPE: lambda: MonitorReport(
        name="monitor.4242",
        topics=[""],
        received=1000,
        missed=30,
        missed_by_sender={"learner.0": 10, "envrunner.1": 20},
        rejected=2,
        final=True,
    ),
    MonitorReportReply.TYPE: lambda: MonitorReportReply(expiry_s=30.0),
    RunStateChanged.TYPE: lambda: RunStateChanged(state=RunState.STOPPING, reason="SIGINT"),
    PolicyRequest.TYPE: lambda: PolicyRequest(rank=3),
    PolicyWeights.TYPE: _weights,
    Rollout.TYPE: _rollout,
    TrainMetrics.TYPE: lambda: TrainMetrics(
        iteration=5,
        env_steps=5120,
        sps=2000.0,
        return_mean=21.5,
        length_mean=None,
        episodes=7,
        values={"loss/policy": -0.01, "loss/value": 0.5, "lr": 2.4e-4},
    ),
    VideoSaved.TYPE: lambda: VideoSaved(
        path="runs/r1/videos/iter-4.mp4",
        gif="runs/r1/videos/iter-4.gif",
        iteration=4,
        env_step=512,
        episode_return=31.0,
        length=31,
        frames=32,
        width=600,
        height=400,
        seed=1000003,
    ),
    EpisodeStats.TYPE: lambda: EpisodeStats(rank=0, env_steps=640, returns=[10.0, 22.0], lengths=[10, 22]),
    SystemMetrics.TYPE: lambda: SystemMetrics(
        ltime=LogicalTime(iteration=3, env_step=4096),
        services=[ProcessSample(service="learner.1", cpu_percent=97.5, rss_mb=412.3)],
    ),
    PauseCommand.TYPE: lambda: PauseCommand(pause_id="p1", scenes=True),
    BarrierReached.TYPE: lambda: BarrierReached(
        pause_id="p1", position=_position(), scenes=[_scene("envrunner.1", 0), _scene("envrunner.1", 1)]
    ),
    RenderPreviews.TYPE: lambda: RenderPreviews(
        pause=2, ltime=LogicalTime(iteration=9, env_step=1152), scenes=[_scene("envrunner.1", 0)]
    ),
    PreviewsSaved.TYPE: lambda: PreviewsSaved(
        pause=2,
        ltime=LogicalTime(iteration=9, env_step=1152),
        paths=["runs/r1/previews/pause-2/envrunner.1-0.png"],
        width=600,
        height=400,
        seconds=0.05,
    ),
    ResumeCommand.TYPE: lambda: ResumeCommand(pause_id="p1"),
    ApplyPatch.TYPE: lambda: ApplyPatch(
        patch_id="a1",
        author="cli@me",
        changes={"ppo.lr": 1e-4, "ppo.target_kl": None},
        at=LogicalTime(iteration=7, env_step=0),
        at_minibatch=2,
    ),
    PatchApplied.TYPE: lambda: PatchApplied(
        patch_id="a1", position=_position(), changes={"ppo.lr": (2.5e-4, 1e-4), "ppo.update_epochs": (4, 8)}
    ),
    PauseRequest.TYPE: lambda: PauseRequest(),
    PauseReply.TYPE: lambda: PauseReply(
        already=False, positions=[_position(), _position(minibatch=0)], latency_s=0.004, pause=2, previews=2
    ),
    ResumeRequest.TYPE: lambda: ResumeRequest(),
    ResumeReply.TYPE: lambda: ResumeReply(already=True, paused_s=1.5),
    ParamsRequest.TYPE: lambda: ParamsRequest(),
    ParamsReply.TYPE: lambda: ParamsReply(
        params=[
            Tunable(
                name="ppo.lr",
                owner=Role.LEARNER,
                type="float",
                apply="next_minibatch",
                description="lr",
                value=2.5e-4,
                minimum=0.0,
                exclusive_minimum=True,
                maximum=1.0,
            )
        ]
    ),
    PatchRequest.TYPE: lambda: PatchRequest(
        changes={"ppo.lr": 1e-4, "ppo.update_epochs": 8, "x.flag": True}, at_iteration=3, author="rule:bci", wait=False
    ),
    PatchReply.TYPE: lambda: PatchReply(patch_id="a1", status=PatchStatus.APPLIED, applied=[_entry()]),
    PatchEvent.TYPE: lambda: PatchEvent(entry=_entry()),
    HistoryRequest.TYPE: lambda: HistoryRequest(),
    HistoryReply.TYPE: lambda: HistoryReply(entries=[_entry(), _entry()]),
    CheckpointRequest.TYPE: lambda: CheckpointRequest(),
    StopRequest.TYPE: lambda: StopRequest(checkpoint=False),
    StopReply.TYPE: lambda: StopReply(checkpoint="/tmp/run/checkpoints/iter-00000009", message=""),
    CheckpointReply.TYPE: lambda: CheckpointReply(
        path="/tmp/run/checkpoints/iter-00000004",
        ltime=_position().ltime,
        bytes=156226,
        seconds=0.009,
        policy_sha256="ab" * 32,
    ),
    CheckpointSaved.TYPE: lambda: CheckpointSaved(
        checkpoint=SavedCheckpoint(
            path="/tmp/run/checkpoints/iter-00000004", kind="manual", ltime=_position().ltime, bytes=156226, kept=2
        )
    ),
    CheckpointCommand.TYPE: lambda: CheckpointCommand(ckpt_id="c1", at_iteration=4),
    CheckpointPart.TYPE: _checkpoint_part,
    CheckpointDone.TYPE: lambda: CheckpointDone(ckpt_id="c1", ok=False, message="disk full"),
    ExternalSample.TYPE: lambda: ExternalSample(
        stream="mock-bci",
        channels=["Fz", "Cz", "Pz"],
        rate=250.0,
        chunk=7,
        timestamps=np.array([10.0, 10.004, 10.008], np.float64),
        samples=np.arange(9, dtype=np.float32).reshape(3, 3),
        derived={"engagement": 0.42},
    ),
}


def sample(type_name: str) -> Message:
    return SAMPLES[type_name]()


def assert_same(expected: Any, actual: Any, where: str = "") -> None:
    """Deep equality of model dumps; arrays must match in dtype, shape and values."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{where}: expected an array, got {type(actual).__name__}"
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        assert np.array_equal(actual, expected), f"{where}: values differ"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a dict, got {type(actual).__name__}"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
