"""`dynamicrl run` and `dynamicrl resume-run` as a user types them, from a directory outside the repository.

Real processes under honcho's Manager, free ports; the console read as the user sees it: plain
lines into a file, the live progress bar on a pseudo-terminal. Each test stops what it started.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import threading

import pytest
from helpers import (
    CLI,
    Supervised,
    alive,
    base_overrides,
    free_ports,
    log_text,
    read_metrics,
    run_cli,
    user_env,
    wait_until,
)

from dynamicrl.core import checkpoints

pytestmark = pytest.mark.e2e

#: a line of the plain console: one timestamp, the process, then what it wrote
LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+)\s+\| (.*)$")
SMALL = ["run.total_env_steps=4096", "env.num_envs=2", "algo.num_steps=64"]


def stopped_codes(log: str) -> dict[str, int]:
    """honcho's `NAME stopped (rc=N)` lines: each process's exit code."""
    return {name: int(rc) for name, rc in re.findall(r"\| (\S+) stopped \(rc=(-?\d+)\)", log)}


def gone(supervised: Supervised) -> bool:
    supervised.watch()
    return not any(alive(pid) for pid in supervised.seen)


def test_run_from_any_directory_trains_to_the_end_on_a_plain_console(runs, tmp_path):
    """Plain lines (stdout is a file): no escape codes, one timestamp per line, the stop reason once;
    every process exits 0. Then resume-run of the finished run says so and starts nothing."""
    run = runs("plain", SMALL)
    launched = run.launch()
    assert launched.wait(timeout=180) == 0, launched.log()[-3000:]
    wait_until(lambda: gone(launched), timeout=10)
    log = launched.log()
    codes = stopped_codes(log)
    everyone = ["controller.1", "envrunner.1", "learner.1", "logger.1", "previewer.1"]  # previewer: pause previews
    assert sorted(codes) == everyone and set(codes.values()) == {0}, log
    assert "\x1b" not in log, "escape codes in the plain console"
    for line in log.splitlines():
        match = LINE.match(line)
        assert match, f"not a console line: {line!r}"
        assert not re.match(r"\d\d:\d\d:\d\d ", match.group(2)), f"two timestamps: {line!r}"
    assert log.count("training done") == 1, log
    assert run.run_dir.parent == run.tmp / "runs" and len(read_metrics(run.run_dir)) == 32

    finished = run_cli("resume-run", str(run.run_dir), cwd=tmp_path, env=run.shell_vars, timeout=30)
    assert finished.returncode == 1, finished.stdout + finished.stderr
    (problem,) = [line for line in finished.stderr.splitlines() if line.startswith("Error:")]
    assert "is finished" in problem and "--total-env-steps" in problem, finished.stderr
    assert "started (pid" not in finished.stdout


def read_pty(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed
            return
        if not chunk:
            return
        into.append(chunk)


def test_a_mujoco_config_starts_two_envrunners_and_ctrl_c_leaves_a_checkpoint(tmp_path):
    """`dynamicrl run configs/env/mujoco_hopper.yaml` (run.envrunners: 2) on a terminal: both env-runners
    start by themselves, the progress bar shows; SIGINT leaves a checkpoint, every process exits 0."""
    overrides = base_overrides(tmp_path, free_ports(4))
    env = user_env(DYNAMICRL_OVERRIDES=" ".join(overrides), PYTHONUNBUFFERED="1", COLUMNS="120")
    args = [*CLI, "run", "configs/env/mujoco_hopper.yaml", "env.num_envs=1", "algo.num_steps=64"]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_pty, args=(primary, chunks), daemon=True)
    reader.start()
    seen: set[int] = set()
    shown = lambda: b"".join(chunks).decode(errors="replace")  # noqa: E731
    try:

        def two_runners_training():
            out = run_cli("status", "--json", cwd=tmp_path, env={"DYNAMICRL_OVERRIDES": env["DYNAMICRL_OVERRIDES"]})
            s = out.json if out.returncode == 0 else None
            return s if s and s["ltime"] and s["ltime"]["iteration"] >= 2 else None

        status = wait_until(two_runners_training, timeout=180, interval=0.5, message=shown()[-3000:])
        runners = sorted(s["service"] for s in status["services"] if s["role"] == "envrunner")
        assert runners == ["envrunner.1", "envrunner.2"], status
        wait_until(lambda: "env steps (" in shown() and "steps/s" in shown(), timeout=10, message=shown()[-2000:])
        seen.update(pid for s in status["services"] for pid in [s["pid"]])
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C reaches the launcher; honcho passes it on as SIGTERM
        assert proc.wait(timeout=60) == 130, shown()[-3000:]  # honcho's code for SIGINT, as `honcho start`
        wait_until(lambda: not any(alive(pid) for pid in seen), timeout=10, message="a service outlived the launcher")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        reader.join(timeout=5)
        os.close(primary)
    text = shown()
    codes = stopped_codes(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text))
    assert len(codes) == 6 and set(codes.values()) == {0}, text[-3000:]  # 2 env-runners and the previewer
    (run_dir,) = (tmp_path / "runs").iterdir()
    last = checkpoints.latest_good(run_dir / "checkpoints")
    assert checkpoints.verify(last)["iteration"] >= status["ltime"]["iteration"]


def test_status_says_what_a_starting_run_waits_for_and_stop_then_exits_everyone_0(runs):
    run = runs("starting", ["run.envrunners=2"]).start()  # one env-runner of the two the run asks for

    def waiting():
        out = run.cli("status", timeout=30)
        return out.stdout if out.returncode == 0 and "more env-runner" in out.stdout else None  # the one registered

    shown = wait_until(waiting, timeout=60, interval=0.3)
    assert "waiting   for 1 more env-runner(s) (run.envrunners=2)" in shown, shown
    stopped = run.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    run.finish(timeout=30)  # each exits 0
    said = [line for proc in run.procs for line in log_text(proc).splitlines() if "before the run started" in line]
    assert len(said) == 1 and "stop requested" in said[0], said


def test_bad_input_is_one_line_and_starts_nothing(tmp_path):
    overrides = " ".join(base_overrides(tmp_path, free_ports(4)))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cases = {
        "missing config": (["run", "nowhere/missing.yaml"], "config file not found: nowhere/missing.yaml"),
        "config typo": (["run", "env.num_envz=3"], "env.num_envz"),
        "port in use": (["run", "--port", str(port)], f"addresses.controller tcp://127.0.0.1:{port}: cannot bind"),
        "too many env-runners": (["run", "--envrunners", "100000"], "run.envrunners=100000"),
        "unknown command": (["runn"], "No such command 'runn'"),
    }
    with taken:
        for case, (args, problem) in cases.items():
            # --port places the four addresses only where none is set by itself
            env = {"DYNAMICRL_OVERRIDES": f"run.root={tmp_path / 'runs'}" if "--port" in args else overrides}
            out = run_cli(*args, cwd=tmp_path, env=env, timeout=30)
            # one message (a config error may list several keys, one per line, under its one "Error:")
            assert out.returncode != 0 and out.stderr.count("Error:") == 1 and problem in out.stderr, (
                f"{case}: {out.stderr}"
            )
            assert "started (pid" not in out.stdout, f"{case} started processes: {out.stdout}"
    assert not (tmp_path / "runs").exists()
