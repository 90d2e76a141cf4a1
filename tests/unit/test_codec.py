"""The codec: every message round-trips, arrays keep dtype and shape, and every
way a frame can be wrong comes out as ProtocolError and nothing else."""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from helpers_messages import SAMPLES, assert_same, sample

from dynamicrl.protocol import PROTOCOL_VERSION
from dynamicrl.protocol.codec import (
    MAX_ARRAY_FRAMES,
    MAX_PAYLOAD_BYTES,
    ProtocolError,
    ProtocolVersionMismatch,
    Received,
    Session,
    decode,
)
from dynamicrl.protocol.messages import (
    MESSAGE_TYPES,
    LogicalTime,
    PolicyRequest,
    PolicyWeights,
    StatusRequest,
    TrainMetrics,
)

# -- helpers ------------------------------------------------------------------------


def roundtrip(message, session: Session | None = None, **kwargs) -> Received:
    frames = (session or Session("test")).encode(message, **kwargs)
    return decode(frames)


def wire(frames: list[Any]) -> list[bytes]:
    """The frames as a peer receives them: plain bytes, buffers copied."""
    return [bytes(f) for f in frames]


def repack(frames: list[Any], mutate: Callable[[dict], Any]) -> list[bytes]:
    """Frames with the payload map changed in place by ``mutate``."""
    frames = wire(frames)
    payload = msgpack.unpackb(frames[1], raw=False)
    mutate(payload)
    frames[1] = msgpack.packb(payload, use_bin_type=True)
    return frames


def expect_protocol_error(frames: list[Any], match: str, kind: type[ProtocolError] = ProtocolError) -> ProtocolError:
    with pytest.raises(Exception) as info:
        decode(frames)
    assert type(info.value) is kind, f"raised {type(info.value).__name__}: {info.value}"
    assert match.lower() in str(info.value).lower(), f"{match!r} not in {str(info.value)!r}"
    return info.value


def weights_frames(**arrays: np.ndarray) -> list[bytes]:
    return wire(Session("test").encode(PolicyWeights(version=0, weights=arrays)))


# -- round trips ------------------------------------------------------------------


def test_samples_cover_every_message_type():
    assert set(SAMPLES) == set(MESSAGE_TYPES), (
        f"missing samples: {sorted(set(MESSAGE_TYPES) - set(SAMPLES))}; "
        f"stale samples: {sorted(set(SAMPLES) - set(MESSAGE_TYPES))}"
    )
    for type_name, cls in MESSAGE_TYPES.items():
        assert type(sample(type_name)) is cls


@pytest.mark.parametrize("type_name", sorted(MESSAGE_TYPES))
@pytest.mark.parametrize("copied", [False, True], ids=["buffers", "bytes"])
def test_every_message_type_round_trips(type_name, copied):
    message = sample(type_name)
    frames = Session("test").encode(message)
    assert frames[0] == message.topic().encode()  # the TYPE, or external.<stream> for ExternalSample
    received = decode(wire(frames) if copied else frames)
    assert type(received.message) is type(message)
    assert received.envelope.type == type_name
    assert_same(message.model_dump(), received.message.model_dump(), type_name)


def test_round_trip_over_a_real_socket_with_zero_copy_frames():
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://codec")
        b.connect("inproc://codec")
        session = Session("pair")
        for type_name in sorted(MESSAGE_TYPES):
            message = sample(type_name)
            a.send_multipart(session.encode(message), copy=False)
            assert b.poll(2000), f"{type_name} not delivered"
            received = decode(b.recv_multipart(copy=False))
            assert_same(message.model_dump(), received.message.model_dump(), type_name)
    finally:
        ctx.destroy(linger=0)


DTYPES = ["bool", "int8", "uint8", "int32", "int64", "float16", "float32", "float64"]
SHAPES = [(), (0,), (3,), (2, 3), (0, 4), (2, 0, 3), (1, 1, 1, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) or "0d")
def test_arrays_keep_dtype_shape_and_values(dtype, shape):
    rng = np.random.default_rng(len(shape) * 100 + DTYPES.index(dtype))
    values = rng.integers(0, 100, size=shape)
    array = np.asarray(values % 2 == 0 if dtype == "bool" else np.asarray(values).astype(dtype))
    assert array.shape == shape and array.dtype == np.dtype(dtype)
    received = decode(weights_frames(w=array)).message
    out = received.weights["w"]
    assert out.dtype == array.dtype
    assert out.shape == shape
    assert np.array_equal(out, array)


def test_non_contiguous_arrays_round_trip():
    base = np.arange(60, dtype=np.float64).reshape(6, 10)
    transposed_slice = base[::2, 1::3].T
    reversed_ints = np.arange(10, dtype=np.int32)[::-1]
    assert not transposed_slice.flags.c_contiguous and not reversed_ints.flags.c_contiguous
    received = decode(weights_frames(t=transposed_slice, r=reversed_ints)).message
    assert_same({"t": transposed_slice, "r": reversed_ints}, received.weights)


def test_many_arrays_in_nested_weights_and_rollout():
    message = PolicyWeights(
        version=1,
        weights={
            f"layer{i}.{kind}": np.full((i + 1, 2), i, dtype=dtype)
            for i, (kind, dtype) in enumerate([("w", "float32"), ("b", "float64"), ("m", "bool"), ("n", "int64")])
        },
    )
    frames = Session("t").encode(message)
    assert len(frames) == 2 + len(message.weights)
    assert_same(message.model_dump(), decode(wire(frames)).message.model_dump())


# -- envelope --------------------------------------------------------------------


def test_seq_counts_per_session():
    first, second = Session("a"), Session("b")
    seqs = [decode(first.encode(StatusRequest())).envelope.seq for _ in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    assert decode(second.encode(StatusRequest())).envelope.seq == 0
    assert decode(first.encode(StatusRequest())).envelope.seq == 5


def test_envelope_carries_sender_run_parent_ltime_and_version():
    session = Session("learner.0", run_id="run-7")
    ltime = LogicalTime(iteration=3, env_step=99)
    envelope = decode(session.encode(StatusRequest(), parent="req-1", ltime=ltime)).envelope
    assert envelope.sender == "learner.0"
    assert envelope.run_id == "run-7"
    assert envelope.parent == "req-1"
    assert envelope.ltime == ltime
    assert envelope.v == PROTOCOL_VERSION
    assert envelope.type == StatusRequest.TYPE
    plain = decode(session.encode(StatusRequest())).envelope
    assert plain.parent is None and plain.ltime is None


def test_ids_are_unique_and_msg_id_is_kept():
    session = Session("s")
    ids = {decode(session.encode(StatusRequest())).envelope.id for _ in range(2000)}
    assert len(ids) == 2000
    assert decode(session.encode(StatusRequest(), msg_id="retry-me")).envelope.id == "retry-me"


def test_newer_minor_version_is_accepted():
    major = PROTOCOL_VERSION.split(".")[0]
    frames = repack(Session("s").encode(StatusRequest()), lambda p: p.update(v=f"{major}.99"))
    assert decode(frames).envelope.v == f"{major}.99"


# -- every way to be wrong ----------------------------------------------------------


def _status() -> list[bytes]:
    return wire(Session("s").encode(StatusRequest()))


def _policy_request() -> list[bytes]:
    return wire(Session("s").encode(PolicyRequest(rank=1)))


def _one_array() -> list[bytes]:
    return weights_frames(w=np.arange(6, dtype=np.float32).reshape(2, 3))


def _set_ref(**changes):
    def mutate(payload):
        payload["body"]["weights"]["w"].update(changes)

    return mutate


def _random_bytes(seed: int, n: int = 64) -> bytes:
    return random.Random(seed).randbytes(n)


def _big_payload() -> list[bytes]:
    frames = _status()
    payload = msgpack.unpackb(frames[1])
    payload["padding"] = "x" * MAX_PAYLOAD_BYTES
    return [frames[0], msgpack.packb(payload)]


BAD_FRAMES: dict[str, tuple[Callable[[], list[Any]], str]] = {
    "no frames": (lambda: [], "got 0 frame"),
    "one frame": (lambda: _status()[:1], "got 1 frame"),
    "truncated payload (half)": (lambda: [_status()[0], _status()[1][: len(_status()[1]) // 2]], "undecodable"),
    "truncated payload (one byte short)": (lambda: [_status()[0], _status()[1][:-1]], "undecodable"),
    "empty payload": (lambda: [_status()[0], b""], "undecodable"),
    "payload is a list": (lambda: [_status()[0], msgpack.packb([1, 2, 3])], "not a map"),
    "payload is a string": (lambda: [_status()[0], msgpack.packb("hello")], "not a map"),
    "non-string map key": (lambda: [_status()[0], msgpack.packb({1: 2})], "undecodable"),
    "major version 2": (lambda: repack(_status(), lambda p: p.update(v="2.0")), "version '2.0'"),
    "major version 0": (lambda: repack(_status(), lambda p: p.update(v="0.1")), "version '0.1'"),
    "version not a string": (lambda: repack(_status(), lambda p: p.update(v=1)), "version 1"),
    "missing version": (lambda: repack(_status(), lambda p: p.pop("v")), "version None"),
    "unknown type": (
        lambda: [b"nope.nothing", repack(_status(), lambda p: p.update(type="nope.nothing"))[1]],
        "unknown message type 'nope.nothing'",
    ),
    "missing type": (lambda: repack(_status(), lambda p: p.pop("type")), "unknown message type None"),
    "topic does not match type": (lambda: [TrainMetrics.TYPE.encode(), _status()[1]], "does not match"),
    "empty topic": (lambda: [b"", _status()[1]], "does not match"),
    "body missing": (lambda: repack(_status(), lambda p: p.pop("body")), "body missing"),
    "body not a map": (lambda: repack(_status(), lambda p: p.update(body=[1])), "body missing or not a map"),
    "wrong field type": (lambda: repack(_policy_request(), lambda p: p["body"].update(rank="one")), "rank"),
    "field out of range": (lambda: repack(_policy_request(), lambda p: p["body"].update(rank=-1)), "rank"),
    "missing field": (lambda: repack(_policy_request(), lambda p: p["body"].pop("rank")), "rank"),
    "extra body field": (lambda: repack(_policy_request(), lambda p: p["body"].update(sneaky=1)), "sneaky"),
    "extra envelope field": (lambda: repack(_status(), lambda p: p.update(sneaky=1)), "sneaky"),
    "bad envelope seq": (lambda: repack(_status(), lambda p: p.update(seq=-3)), "seq"),
    "envelope id empty": (lambda: repack(_status(), lambda p: p.update(id="")), "id"),
    "envelope seq a string": (lambda: repack(_status(), lambda p: p.update(seq="1")), "seq"),
    "envelope seq a bool": (lambda: repack(_status(), lambda p: p.update(seq=True)), "seq"),
    "envelope ltime a string": (
        lambda: repack(_status(), lambda p: p.update(ltime={"iteration": "1", "env_step": 0})),
        "iteration",
    ),
    "array instead of list": (
        lambda: repack(weights_frames(w=np.zeros(2)), lambda p: p["body"]["weights"].update(w=[0.0, 0.0]))[:2],
        "weights.w",
    ),
    "array ref to missing frame": (lambda: repack(_one_array(), _set_ref(__ndarray__=5)), "does not name"),
    "array ref negative index": (lambda: repack(_one_array(), _set_ref(__ndarray__=-1)), "does not name"),
    "array ref index is a bool": (lambda: repack(_one_array(), _set_ref(__ndarray__=False)), "does not name"),
    "array ref index is a string": (lambda: repack(_one_array(), _set_ref(__ndarray__="0")), "does not name"),
    "array ref with no frames": (lambda: repack(_one_array(), lambda p: None)[:2], "does not name"),
    "two refs to one frame": (
        lambda: repack(
            weights_frames(a=np.zeros(2), b=np.ones(2)), lambda p: p["body"]["weights"]["b"].update(__ndarray__=0)
        ),
        "does not name",
    ),
    "array ref extra key": (lambda: repack(_one_array(), _set_ref(order="F")), "keys"),
    "array ref missing shape": (lambda: repack(_one_array(), lambda p: p["body"]["weights"]["w"].pop("shape")), "keys"),
    "array frame too short": (lambda: _one_array()[:2] + [_one_array()[2][:-1]], "has 23 bytes"),
    "array frame too long": (lambda: _one_array()[:2] + [_one_array()[2] + b"\0"], "has 25 bytes"),
    "array shape/size mismatch": (lambda: repack(_one_array(), _set_ref(shape=[3, 3])), "needs 36"),
    "object dtype": (lambda: repack(_one_array(), _set_ref(dtype="|O")), "dtype '|O'"),
    "datetime dtype": (lambda: repack(_one_array(), _set_ref(dtype="<M8[ns]")), "dtype '<M8[ns]'"),
    "big-endian dtype": (lambda: repack(_one_array(), _set_ref(dtype=">f4")), "dtype '>f4'"),
    "dtype not a string": (lambda: repack(_one_array(), _set_ref(dtype=4)), "dtype 4"),
    "negative shape": (lambda: repack(_one_array(), _set_ref(shape=[-2, -3])), "shape"),
    "shape not a list": (lambda: repack(_one_array(), _set_ref(shape=6)), "shape"),
    "shape of floats": (lambda: repack(_one_array(), _set_ref(shape=[2.0, 3.0])), "shape"),
    "shape with a bool": (lambda: repack(_one_array(), _set_ref(shape=[True, 6])), "shape"),
    "shape too large": (lambda: repack(_one_array(), _set_ref(shape=[2**40, 2**40, 2**40])), ""),
    "shape beyond int64": (lambda: repack(_one_array(), _set_ref(shape=[2**64 - 1])), ""),
    "unreferenced extra frame": (lambda: _one_array() + [b"\0" * 8], "not referenced"),
    "array frame on a message without arrays": (lambda: _status() + [b"abcd"], "not referenced"),
    "payload over MAX_PAYLOAD_BYTES": (_big_payload, "exceeds"),
    "too many frames": (lambda: _status() + [b""] * (MAX_ARRAY_FRAMES + 1), "too many array frames"),
    "msgpack ext type": (
        lambda: repack(_status(), lambda p: p["body"].update(x=msgpack.ExtType(5, b"zz"))),
        "extension type 5",
    ),
    "msgpack ext type in envelope": (
        lambda: repack(_status(), lambda p: p.update(sender=msgpack.ExtType(1, b""))),
        "extension type 1",
    ),
    "msgpack timestamp ext": (
        lambda: repack(
            wire(Session("s").encode(sample("membership.register_reply"))),
            lambda p: p["body"]["config"].update(when=msgpack.Timestamp(1, 0)),
        ),
        "extension type -1",
    ),
}


def _random_payload(seed: int) -> list[Any]:
    return [_status()[0], _random_bytes(seed)]


BAD_FRAMES.update({f"random payload {seed}": (functools.partial(_random_payload, seed), "") for seed in range(10)})


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_raise_protocol_error(case):
    build, match = BAD_FRAMES[case]
    # another major version is its own subclass, so a monitor can stop on it instead of skipping
    expect_protocol_error(
        build(), match, ProtocolVersionMismatch if case.startswith("major version") else ProtocolError
    )


def test_oversized_payload_is_refused_before_unpacking():
    frames = _big_payload()
    assert len(frames[1]) > MAX_PAYLOAD_BYTES
    expect_protocol_error(frames, f"exceeds {MAX_PAYLOAD_BYTES}")


def test_exactly_max_array_frames_is_allowed():
    arrays = {f"a{i}": np.array([i], dtype=np.int16) for i in range(MAX_ARRAY_FRAMES)}
    frames = weights_frames(**arrays)
    assert len(frames) == 2 + MAX_ARRAY_FRAMES
    assert len(decode(frames).message.weights) == MAX_ARRAY_FRAMES


def test_expect_refuses_other_types():
    frames = _policy_request()
    assert isinstance(decode(frames, expect=[PolicyRequest]).message, PolicyRequest)
    with pytest.raises(ProtocolError, match="unexpected message type"):
        decode(frames, expect=[StatusRequest])


# -- fuzzing -----------------------------------------------------------------------


def _fuzz_seeds() -> list[list[bytes]]:
    return [
        wire(Session("fuzz").encode(sample(name), parent="p", ltime=LogicalTime(iteration=1, env_step=2)))
        for name in sorted(MESSAGE_TYPES)
    ]


def _mutate_bytes(rng: random.Random, original: bytes) -> bytes:
    data = bytearray(original)
    op = rng.randrange(5)
    if op == 0 and data:  # flip a few bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        del data[rng.randrange(len(data) + 1) :]
    elif op == 2:  # insert random bytes
        i = rng.randrange(len(data) + 1)
        data[i:i] = rng.randbytes(rng.randint(1, 8))
    elif op == 3 and data:  # overwrite a byte with an interesting value
        data[rng.randrange(len(data))] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC7, 0xD4, 0xDC, 0xDE, 0xFF])
    elif data:  # delete a span
        i = rng.randrange(len(data))
        del data[i : i + rng.randint(1, 8)]
    return bytes(data)


def test_fuzz_byte_mutations_only_raise_protocol_error():
    rng = random.Random(20240611)
    seeds = _fuzz_seeds()
    outcomes = {"ok": 0, "refused": 0}
    for iteration in range(2000):
        frames = list(rng.choice(seeds))
        roll = rng.random()
        if roll < 0.1:  # drop, duplicate or add a whole frame
            choice = rng.randrange(3)
            if choice == 0 and frames:
                del frames[rng.randrange(len(frames))]
            elif choice == 1 and frames:
                frames.insert(rng.randrange(len(frames) + 1), rng.choice(frames))
            else:
                frames.append(rng.randbytes(rng.randint(0, 16)))
        else:  # payload most of the time, sometimes topic or an array frame
            index = 1 if roll < 0.8 or len(frames) < 2 else rng.randrange(len(frames))
            for _ in range(rng.randint(1, 3)):
                frames[index] = _mutate_bytes(rng, frames[index])
        try:
            decode(frames)
            outcomes["ok"] += 1
        except ProtocolError:
            outcomes["refused"] += 1
        except Exception as exc:  # pragma: no cover - this is the failure being tested for
            pytest.fail(f"iteration {iteration}: {type(exc).__name__}: {exc}\nframes: {frames!r}"[:4000])
    assert outcomes["refused"] > 1000, outcomes  # the mutations really were exercising errors


_WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    float("nan"),
    float("inf"),
    "",
    "x" * 300,
    b"\x00\xff",
    [],
    [1, "a"],
    {},
    {"__ndarray__": 0, "dtype": "<f4", "shape": [1]},
    {"__ndarray__": 0},
    {"nested": {"deeper": [None]}},
    msgpack.ExtType(3, b"e"),
    msgpack.Timestamp(5, 0),
]


def _weird(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(_WEIRD_VALUES))


def _random_path_edit(rng: random.Random, node: Any) -> None:
    """Replace, delete or add one value somewhere inside ``node`` (a dict)."""
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = rng.choice(keys)
        child = node[key]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            node = child
            continue
        action = rng.randrange(3)
        if action == 0:
            node[key] = _weird(rng)
        elif action == 1 and isinstance(node, dict):
            del node[key]
        elif isinstance(node, dict):
            node[rng.choice(["extra", "__ndarray__", "dtype", "shape", "body", "v"])] = _weird(rng)
        else:
            node.append(_weird(rng))
        return


def test_fuzz_structural_mutations_only_raise_protocol_error():
    rng = random.Random(99)
    seeds = _fuzz_seeds()
    refused = 0
    for iteration in range(1500):
        frames = list(rng.choice(seeds))
        payload = msgpack.unpackb(frames[1], raw=False)
        for _ in range(rng.randint(1, 3)):
            _random_path_edit(rng, payload)
        frames[1] = msgpack.packb(payload, use_bin_type=True)
        try:
            decode(frames)
        except ProtocolError:
            refused += 1
        except Exception as exc:  # pragma: no cover
            pytest.fail(f"iteration {iteration}: {type(exc).__name__}: {exc}\npayload: {payload!r}"[:4000])
    assert refused > 500
