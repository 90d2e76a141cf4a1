"""A wrong value on the command line is one clear line, not a traceback, a crash or a hang (issue 16, item 9).

Each case runs the real CLI in a subprocess with a dead controller address (nothing listens on its
port) and a short request timeout: the command must fail before it sends anything, exit non-zero,
and print exactly one ``Error:`` line naming the key or option, with no traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import CLI, free_ports, user_env

from dynamicrl.core.settings import INT64_MAX, INT64_MIN, ConfigError, endpoint_problem, load_config

BIG = b"12345678901234567890123"  # 23 digits: beyond int64, which msgpack (and every peer) carries


def dynamicrl(tmp_path: Path, *args: bytes, overrides_env: bytes | None = None) -> subprocess.CompletedProcess:
    """`dynamicrl ARGS` as bytes (the child decodes them as Python does argv: undecodable bytes become
    lone surrogates), in ``tmp_path``, against a free port nobody listens on."""
    env = {k.encode(): v.encode() for k, v in user_env().items()}
    if overrides_env is not None:
        env[b"DYNAMICRL_OVERRIDES"] = overrides_env
    config = [f"addresses.port={free_ports(4)[0]}".encode(), b"timing.request_timeout_s=0.2"]
    if args[0] == b"patch":  # its config overrides are --set KEY=VALUE
        config = [word for override in config for word in (b"--set", override)]
    argv = [*map(os.fsencode, CLI), *args, *config]
    return subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, check=False
    )


CASES = [
    # config overrides, on the command line or in $DYNAMICRL_OVERRIDES
    pytest.param([b"status", b"algo.lr=\xff"], None, "algo.lr", "not valid UTF-8", id="override-surrogate"),
    pytest.param([b"status", b"run.seed=" + BIG], None, "run.seed", "out of range", id="override-big-int"),
    pytest.param([b"run", b"algo.lr=" + BIG], None, "algo.lr", "out of range", id="run-override-big-int"),
    pytest.param([b"status", b"algo.lr=true"], None, "algo.lr", "not true/false", id="override-true-for-number"),
    pytest.param([b"status"], b"algo.lr=\xff", "algo.lr", "not valid UTF-8", id="env-surrogate"),
    pytest.param([b"status"], b"run.seed=" + BIG, "run.seed", "out of range", id="env-big-int"),
    # patch values: refused before the request is sent
    pytest.param([b"patch", b"ppo.lr=\xff"], None, "ppo.lr", "not valid UTF-8", id="patch-surrogate"),
    pytest.param([b"patch", b"ppo.lr=" + BIG], None, "ppo.lr", "out of range", id="patch-big-int"),
    # endpoints
    pytest.param([b"status", b"addresses.controller=garbage"], None, "addresses.controller", "not a ZeroMQ endpoint",
                 id="endpoint-garbage"),
    pytest.param([b"status", b"addresses.bus_out=tcp://127.0.0.1"], None, "addresses.bus_out",
                 "not a ZeroMQ endpoint", id="endpoint-no-port"),
    pytest.param([b"status", b"addresses.data=udp://1.2.3.4:5"], None, "addresses.data", "not a ZeroMQ endpoint",
                 id="endpoint-udp"),
    # seconds options
    pytest.param([b"status", b"--timeout", b"-1"], None, "--timeout", "range", id="timeout-negative"),
    pytest.param([b"status", b"--timeout", b"nan"], None, "--timeout", "not a finite number", id="timeout-nan"),
    pytest.param([b"status", b"--timeout", b"1e9"], None, "--timeout", "range", id="timeout-1e9"),
    pytest.param([b"watch", b"--timeout", b"inf"], None, "--timeout", "range", id="watch-timeout-inf"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "overrides_env", "names", "says"), CASES)
def test_a_wrong_value_is_one_error_line_naming_it(tmp_path, args, overrides_env, names, says):
    done = dynamicrl(tmp_path, *args, overrides_env=overrides_env)
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    assert done.returncode != 0, (out, err)
    assert "Traceback" not in out + err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    # the rest, if any, is click's usage hint (a usage error): no second message
    assert all(line.startswith(("Usage:", "Try ", " ")) or not line for line in err.splitlines() if line not in errors)
    assert names in errors[0] and says in errors[0], errors[0]
    assert list(tmp_path.iterdir()) == [], "nothing of a run may be made"  # e.g. `dynamicrl run` made no runs/


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:5550", "tcp://*:5550", "tcp://[::1]:65535", "tcp://learner-1.example.org:1", "ipc:///tmp/x.sock",
     "inproc://bus"],
)  # fmt: skip
def test_an_endpoint_zeromq_takes_is_accepted(endpoint):
    assert endpoint_problem(endpoint) == ""
    assert load_config("configs/defaults.yaml", [f"addresses.data={endpoint}"]).addresses.data == endpoint


@pytest.mark.parametrize(
    "endpoint",
    ["garbage", "tcp://127.0.0.1", "tcp://127.0.0.1:0", "tcp://127.0.0.1:65536", "udp://1.2.3.4:5", "ipc://"],
)
def test_an_endpoint_zeromq_refuses_is_refused(endpoint):
    assert endpoint_problem(endpoint)


def test_the_default_endpoints_are_filled_from_host_and_port():
    addresses = load_config("configs/defaults.yaml", ["addresses.host=::1", "addresses.port=6000"]).addresses
    assert (addresses.controller, addresses.data) == ("tcp://[::1]:6000", "tcp://[::1]:6003")


@pytest.mark.parametrize("value", [INT64_MIN, INT64_MAX])
def test_int64_itself_is_a_value(value):
    assert load_config("configs/defaults.yaml", [f"env.kwargs={{n: {value}}}"]).env.kwargs == {"n": value}


def test_a_big_int_inside_a_mapping_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"env\.kwargs: integer out of range"):
        load_config("configs/defaults.yaml", [f"env.kwargs={{n: {BIG.decode()}}}"])


def test_true_is_still_a_bool_where_a_bool_is_due():
    assert load_config("configs/defaults.yaml", ["algo.anneal_lr=true", "env.kwargs={x: true}"]).algo.anneal_lr
