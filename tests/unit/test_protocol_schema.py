"""docs/protocol.schema.json is the published JSON Schema of the wire contract.

It is generated (`dynamicrl protocol schema --out docs/protocol.schema.json`), never edited by
hand: these tests fail when the committed file differs from a fresh export, so it cannot drift
from the models. They also check that what our codec really sends validates against it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgpack
import numpy as np
import pytest
from click.testing import CliRunner

from dynamicrl.clients.cli import main as cli
from dynamicrl.protocol import PROTOCOL_VERSION
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import (
    MESSAGE_TYPES,
    EpisodeStats,
    LogicalTime,
    PolicyWeights,
    RunState,
    RunStateChanged,
    StatusRequest,
    TrainMetrics,
)
from dynamicrl.protocol.schema import protocol_schema_json

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "protocol.schema.json"
REGENERATE = "regenerate it with `dynamicrl protocol schema --out docs/protocol.schema.json`"


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def test_committed_schema_equals_a_fresh_export() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == protocol_schema_json(), (
        f"docs/protocol.schema.json is out of date: {REGENERATE}"
    )


def test_cli_exports_the_same_document(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = CliRunner().invoke(cli, ["protocol", "schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == protocol_schema_json()
    stdout = CliRunner().invoke(cli, ["protocol", "schema"])
    assert stdout.exit_code == 0 and json.loads(stdout.output) == json.loads(protocol_schema_json())


def test_every_message_type_is_in_the_schema(committed: dict) -> None:
    assert committed["protocol_version"] == PROTOCOL_VERSION
    assert set(MESSAGE_TYPES) == set(committed["messages"])
    for type_name, cls in MESSAGE_TYPES.items():
        assert committed["messages"][type_name]["title"] == cls.__name__
        assert committed["messages"][type_name]["x-dynamicrl-type"] == type_name
    assert set(committed["envelope"]["properties"]["type"]["enum"]) == set(MESSAGE_TYPES)


def _payload(message, **encode) -> tuple[dict, int]:
    _topic, payload, *arrays = Session("schema-test", "run-1").encode(message, **encode)
    return msgpack.unpackb(bytes(payload), raw=False), len(arrays)


@pytest.mark.parametrize(
    "message",
    [
        TrainMetrics(
            iteration=3,
            env_steps=768,
            sps=2000.5,
            return_mean=None,
            episodes=2,
            values={"policy_loss": 0.1, "explained_variance": math.nan},
            hyperparameters={"ppo.lr": 3e-4},
        ),
        EpisodeStats(rank=0, env_steps=512, returns=[10.0, 12.5], lengths=[10, 12]),
        RunStateChanged(state=RunState.PAUSED, reason="every service stands at its barrier"),
        StatusRequest(),
        PolicyWeights(version=4, weights={"policy.w": np.zeros((2, 3), np.float32)}),
    ],
    ids=lambda m: m.TYPE,
)
def test_what_the_codec_sends_validates_against_the_schema(committed: dict, message) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    payload, _ = _payload(message, ltime=LogicalTime(iteration=1, env_step=2))
    jsonschema.validate(payload, committed["envelope"])
    jsonschema.validate(payload["body"], committed["messages"][payload["type"]])


def test_the_schema_refuses_what_the_codec_refuses(committed: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    payload, _ = _payload(EpisodeStats(rank=0, env_steps=1, returns=[], lengths=[]))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "surprise": 1}, committed["envelope"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload["body"], "rank": -1}, committed["messages"]["metrics.episode"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "type": "external.nothing"}, committed["envelope"])
