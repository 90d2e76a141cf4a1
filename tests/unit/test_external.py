"""External streams: the ExternalSample message and its topic, the mock BCI's determinism,
and the engagement rule's decisions (no processes here)."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from pydantic import ValidationError

from dynamicrl.clients.providers.mock_bci import MockBCI
from dynamicrl.clients.rules import EngagementRule
from dynamicrl.protocol import topics
from dynamicrl.protocol.codec import ProtocolError, Session, decode
from dynamicrl.protocol.messages import ExternalSample, StatusRequest, TrainMetrics, stream_topic


def _sample(stream: str = "mock-bci", n: int = 4, width: int = 3, **changes) -> ExternalSample:
    fields: dict[str, Any] = dict(
        stream=stream,
        channels=[f"c{i}" for i in range(width)],
        rate=250.0,
        chunk=2,
        timestamps=np.linspace(100.0, 100.012, n),
        samples=np.arange(n * width, dtype=np.float32).reshape(n, width),
        derived={"engagement": 0.25},
    )
    fields.update(changes)
    return ExternalSample(**fields)


# -- the message and its topic ----------------------------------------------------------------------


def test_round_trip_keeps_arrays_and_travels_under_its_stream_topic():
    message = _sample()
    frames = [bytes(f) for f in Session("provider.test").encode(message)]
    assert frames[0] == b"external.mock-bci" and message.topic() == stream_topic("mock-bci")
    assert len(frames) == 4  # topic, payload, timestamps, samples
    received = decode(frames)
    got = received.message
    assert isinstance(got, ExternalSample) and received.envelope.type == "external.sample"
    assert got.timestamps.dtype == np.float64 and got.samples.dtype == np.float32
    assert np.array_equal(got.timestamps, message.timestamps) and np.array_equal(got.samples, message.samples)
    assert got.derived == {"engagement": 0.25} and got.channels == message.channels and got.chunk == 2
    assert topics.matches(frames[0].decode(), topics.EXTERNAL)


@pytest.mark.parametrize(
    "topic", [b"external.sample", b"external.other", b"external.", b"", b"metrics.train", b"external.mock-bci.extra"]
)
def test_a_wrong_topic_is_refused(topic):
    frames = [bytes(f) for f in Session("provider.test").encode(_sample())]
    with pytest.raises(ProtocolError, match="does not match"):
        decode([topic, *frames[1:]])


def test_other_messages_still_travel_under_their_type():
    assert Session("x").encode(StatusRequest())[0] == StatusRequest.TYPE.encode()
    frames = [bytes(f) for f in Session("x").encode(StatusRequest())]
    with pytest.raises(ProtocolError, match="does not match"):
        decode([b"external.mock-bci", frames[1]])


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(timestamps=np.zeros(4, np.float32)), "float64"),
        (dict(samples=np.zeros((4, 3), np.float64)), "float32"),
        (dict(samples=np.zeros(12, np.float32)), "float32"),
        (dict(samples=np.zeros((3, 3), np.float32)), "3 samples"),
        (dict(samples=np.zeros((4, 2), np.float32)), "2 columns"),
        (dict(stream="has space"), "pattern"),
        (dict(stream=""), "pattern"),
        (dict(channels=[]), "at least 1"),
    ],
)
def test_inconsistent_samples_are_refused(change, match):
    with pytest.raises(ValidationError, match=match):
        _sample(**change)


def test_a_forged_body_with_mismatched_shapes_is_a_protocol_error():
    frames = [bytes(f) for f in Session("x").encode(_sample())]
    payload = msgpack.unpackb(frames[1], raw=False)
    payload["body"]["channels"] = ["only-one"]
    with pytest.raises(ProtocolError, match="columns"):
        decode([frames[0], msgpack.packb(payload, use_bin_type=True), *frames[2:]])


# -- the mock BCI ------------------------------------------------------------------------------------


def _stream(seed: int, chunks: int = 40, n: int = 25) -> tuple[np.ndarray, np.ndarray, list[float]]:
    source = MockBCI(seed=seed, rate=250.0, channels=6)
    times, samples, engagement = [], [], []
    for _ in range(chunks):
        t, x = source.next_chunk(n)
        times.append(t)
        samples.append(x)
        engagement.append(source.engagement())
    return np.concatenate(times), np.concatenate(samples), engagement


def test_mock_bci_same_seed_same_samples():
    t1, x1, e1 = _stream(7)
    t2, x2, e2 = _stream(7)
    assert x1.dtype == np.float32 and x1.shape == (1000, 6)
    assert np.array_equal(t1, t2) and np.array_equal(x1, x2) and e1 == e2


def test_mock_bci_chunking_does_not_change_the_signal_shape_of_time():
    t1, _, _ = _stream(7, chunks=40, n=25)
    t2, _, _ = _stream(7, chunks=10, n=100)
    assert np.allclose(t1, t2) and np.allclose(np.diff(t1), 1 / 250.0)


def test_mock_bci_different_seed_different_samples():
    _, x1, e1 = _stream(7)
    _, x2, e2 = _stream(8)
    assert not np.allclose(x1, x2) and e1 != e2


def test_mock_bci_looks_like_eeg():
    _, x, engagement = _stream(3, chunks=200)
    assert 1.0 < float(x.std()) < 100.0  # microvolts
    assert all(np.isfinite(engagement)) and min(engagement) > 0
    source = MockBCI(seed=3)
    source.next_chunk(500)
    powers = source.band_powers()
    assert set(powers) == {"theta", "alpha", "beta"} and all(v > 0 for v in powers.values())


# -- the rule's decisions ---------------------------------------------------------------------------


class _FakeClient:
    def __init__(self, refuse: bool = False) -> None:
        self.sent: list = []
        self.refuse = refuse

    def call(self, request):
        from dynamicrl.clients.control import ControlError
        from dynamicrl.protocol.messages import ErrorCode, ErrorReply, PatchReply, PatchStatus

        self.sent.append(request)
        if self.refuse:
            raise ControlError(ErrorReply(code=ErrorCode.REJECTED, message="ppo.ent_coef: out of bounds"))
        return PatchReply(patch_id=f"p{len(self.sent)}", status=PatchStatus.PENDING)


def _metrics(iteration: int, value: float) -> TrainMetrics:
    return TrainMetrics(
        iteration=iteration,
        env_steps=256 * iteration,
        sps=1000.0,
        episodes=1,
        values={},
        hyperparameters={"ppo.ent_coef": value},
    )


def test_rule_raises_within_bounds_at_most_once_per_window_and_lowers_when_high():
    rule = EngagementRule(
        "tcp://x:1", "tcp://x:2", low=0.3, high=0.6, minimum=0.0, maximum=0.012, step=0.005, every_iterations=3
    )
    client = _FakeClient()
    rule.on_metrics(_metrics(1, 0.0), client)
    assert client.sent == []  # no engagement seen yet
    rule.engagement = 0.1
    for iteration in range(2, 12):
        rule.on_metrics(_metrics(iteration, rule.value), client)
    values = [r.changes["ppo.ent_coef"] for r in client.sent]
    assert values == [0.005, 0.01, 0.012]  # clamped at max; then nothing more to raise
    assert [d[0] for d in rule.decisions] == [2, 5, 8]
    assert all(r.author == "rule:engagement" and r.wait is False for r in client.sent)
    rule.engagement = 0.9
    rule.on_metrics(_metrics(12, 0.012), client)
    assert client.sent[-1].changes == {"ppo.ent_coef": 0.007}
    rule.engagement = 0.45  # between low and high: leave it
    rule.on_metrics(_metrics(20, 0.007), client)
    assert len(client.sent) == 4


def test_a_refused_patch_is_logged_and_the_rule_carries_on(caplog):
    rule = EngagementRule("tcp://x:1", "tcp://x:2", low=0.3, minimum=0.0, maximum=0.05, step=0.005, every_iterations=1)
    client = _FakeClient(refuse=True)
    rule.engagement = 0.1
    with caplog.at_level("WARNING", logger="dynamicrl.clients.rules"):
        rule.on_metrics(_metrics(1, 0.0), client)
        rule.on_metrics(_metrics(2, 0.0), client)
    assert rule.rejected == 2 and rule.patches == 0 and len(client.sent) == 2
    assert "refused" in caplog.text and "keeps running" in caplog.text


def test_rule_arguments_are_checked():
    with pytest.raises(ValueError):
        EngagementRule("a", "b", minimum=1.0, maximum=0.0)
    with pytest.raises(ValueError):
        EngagementRule("a", "b", step=0)
    with pytest.raises(ValueError):
        EngagementRule("a", "b", stream="bad stream")


# -- the opt-in Procfile -----------------------------------------------------------------------------


def test_procfile_bci_runs_the_services_the_provider_and_a_rule_with_valid_arguments():
    import shlex
    from pathlib import Path

    import click

    from dynamicrl.clients.cli import main as cli

    root = Path(__file__).resolve().parents[2]

    def entries(name: str) -> dict[str, str]:
        lines = (root / name).read_text().splitlines()
        return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))

    lines, base = entries("Procfile.bci"), entries("Procfile")
    assert base.items() <= lines.items() and {"bci", "rule"} <= set(lines)
    for name, command in lines.items():
        words = shlex.split(command.replace("${DYNAMICRL_SERVICE:-dynamicrl service}", "dynamicrl service"))
        assert words[:2] == ["exec", "dynamicrl"], name
        group = cli.get_command(click.Context(cli), words[2])
        if words[2] in ("provider", "rule"):
            command_obj, rest = group.commands[words[3]], words[4:]
            command_obj.make_context(words[3], list(rest))  # raises on an unknown option or a bad value


def engagement_sample(value: float, at: float) -> ExternalSample:
    return ExternalSample(
        stream="mock-bci",
        channels=["c0"],
        rate=250.0,
        timestamps=np.array([at - 0.1, at]),
        samples=np.zeros((2, 1), np.float32),
        derived={"engagement": value},
    )


def test_the_rule_smooths_engagement_on_the_streams_clock():
    latest = EngagementRule("a", "b")
    smooth = EngagementRule("a", "b", smooth_s=1.0)
    for rule in (latest, smooth):
        rule.on_sample(engagement_sample(0.8, at=10.0))
        rule.on_sample(engagement_sample(0.0, at=11.0))  # one time constant later
    assert latest.engagement == 0.0
    assert smooth.engagement == pytest.approx(0.8 * np.exp(-1.0))  # 0.8 + (1 - e^-1) * (0.0 - 0.8)
    smooth.on_sample(engagement_sample(0.0, at=11.0))  # no time passed: no weight
    assert smooth.engagement == pytest.approx(0.8 * np.exp(-1.0))
    with pytest.raises(ValueError, match="--smooth"):
        EngagementRule("a", "b", smooth_s=-1.0)
