"""Checkpoint size, save time and restore time of a real run: measures and prints, asserts nothing.

Runs Ant-v5 (``configs/env/mujoco_ant.yaml``) with 2 env-runners x 8 envs under
`honcho start` on free ports, its run directory in a temporary directory, with
``checkpoint.every_iterations=2``. It reports:

* save: every controller log line ``checkpoint PATH: N bytes in X s (write), Y s from the
  boundary`` and one ``CheckpointRequest`` mid-run (its ``CheckpointReply``: bytes and seconds
  from the request to the files renamed into place), plus the size of each file;
* restore, end to end: the run is SIGKILLed (every process) after its iteration-4
  checkpoint, then ``dynamicrl resume-run`` continues it; the time from launch to the
  learner's and both env-runners' ``resumed at`` lines, and to the first new metrics row,
  next to the fresh start's time to its first row (process start-up is in both);
* restore, in process: ``read`` with its ``verify`` (the controller), ``load_state`` of the
  policy and optimiser (the learner), ``envstate.restore`` of the 8 Ant envs (an env-runner).

    python bench/checkpoint_size.py [--envs 8] [--iterations 8] [--keep-dir]

Note: an env-runner's part is one message, and the receiver refuses more than
``MAX_ARRAY_FRAMES`` (256) arrays; an Ant sub-env contributes about 110, so with 8
sub-envs per env-runner the checkpoint is refused and abandoned after
``checkpoint.timeout_s``. The script then prints that error and stops.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import harness  # bench/harness.py: descendants()

from dynamicrl.clients.processes import ADDRESS_KEYS, endpoint, free_ports, log_text, start_module, stop

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/env/mujoco_ant.yaml")
SAVE_LINE = re.compile(r"checkpoint (\S+): (\d+) bytes in ([\d.]+) s \(write\), ([\d.]+) s since it began")


class Launched:
    """``python -m MODULE ARGS`` (honcho, or the CLI that execs it) with its log in ``tmp``; every
    process seen below it is remembered, so ``kill9`` can crash the whole run at once."""

    def __init__(self, module: str, args: list[str], env: dict, tmp: Path, name: str) -> None:
        self.proc: subprocess.Popen = start_module(module, args, tmp, name, env)
        self.started = time.monotonic()
        self.seen: set[int] = set()

    def log(self) -> str:
        return log_text(self.proc)

    def watch(self) -> None:
        self.seen.update(harness.descendants(self.proc.pid))

    def kill9(self) -> None:
        self.watch()
        for pid in [self.proc.pid, *self.seen]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM honcho (it stops its processes, as on Ctrl-C), bounded wait, then SIGKILL every one left."""
        if self.proc.poll() is None:
            self.watch()
            stop(self.proc, timeout=20)
        self.kill9()


def rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def wait_for(what, timeout: float, launched: Launched, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launched.watch()
        value = what()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout} s:\n{launched.log()[-3000:]}")


def in_process_restore(checkpoint: Path) -> dict[str, float]:
    from dynamicrl.core import checkpoints, envstate
    from dynamicrl.core.algorithms import get_algorithm, load_class
    from dynamicrl.core.envs import make_vector_env
    from dynamicrl.core.settings import config_from_dict

    started = time.perf_counter()
    _manifest, controller, parts = checkpoints.read(checkpoint)
    figures = {"controller: read (verify every sha256, load every npz)": time.perf_counter() - started}
    config = config_from_dict(controller["config"])
    envs = make_vector_env(config.env)
    learner = parts[controller["learner"]]
    algorithm = load_class(get_algorithm(config.algo.name).learner)(
        config.algo, envs.single_observation_space, envs.single_action_space, seed=1, num_iterations=10
    )
    started = time.perf_counter()
    algorithm.load_state(learner.arrays, learner.meta)
    figures["learner: policy + optimiser load_state"] = time.perf_counter() - started
    runner = next(p for name, p in parts.items() if name.startswith("envrunner"))
    started = time.perf_counter()
    for i, env in enumerate(envs.envs):
        prefix = f"env.{i}."
        envstate.restore(
            env,
            {k.removeprefix(prefix): v for k, v in runner.arrays.items() if k.startswith(prefix)},
            runner.meta["envs"][i],
        )
    figures[f"env-runner: envstate.restore of {len(envs.envs)} envs"] = time.perf_counter() - started
    envs.close()
    arrays = sum(a.nbytes for p in parts.values() for a in p.arrays.values())
    figures["(array bytes in the checkpoint)"] = float(arrays)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=8, help="sub-envs per env-runner (2 env-runners)")
    parser.add_argument("--iterations", type=int, default=8, help="iterations of 2 x ENVS x 256 env steps")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary run directory")
    args = parser.parse_args()

    import dynamicrl
    from dynamicrl.clients.control import ControlClient, ControlError, RequestTimeout
    from dynamicrl.protocol.codec import MAX_ARRAY_FRAMES
    from dynamicrl.protocol.messages import CheckpointRequest, RunState

    tmp = Path(tempfile.mkdtemp(prefix="dynamicrl-ckpt-bench-"))
    ports = free_ports(len(ADDRESS_KEYS))
    controller = endpoint(ports[0])
    overrides = [f"addresses.{k}={endpoint(p)}" for k, p in zip(ADDRESS_KEYS, ports)]
    overrides += [
        f"run.root={tmp / 'runs'}",
        "run.envrunners=2",
        f"env.num_envs={args.envs}",
        f"run.total_env_steps={args.iterations * 2 * args.envs * 256}",
        "checkpoint.every_iterations=2",
    ]
    # the run's settings reach every service through honcho's environment, as a user's would
    env = {"DYNAMICRL_CONFIG": CONFIG, "DYNAMICRL_OVERRIDES": " ".join(overrides)}
    launched: list[Launched] = []
    try:
        # a fresh run, killed after its iteration-4 checkpoint
        fresh = Launched("honcho", ["-f", str(REPO / "Procfile"), "start", "-c", "envrunner=2"], env, tmp, "fresh")
        launched.append(fresh)
        run_dir = wait_for(lambda: (tmp / "runs").is_dir() and next((tmp / "runs").iterdir(), None), 120, fresh)
        wait_for(lambda: rows(run_dir) >= 1, 300, fresh)
        fresh_first_row = time.monotonic() - fresh.started
        with ControlClient(controller, timeout_s=120, retries=0) as client:
            while client.status().state is not RunState.RUNNING:
                time.sleep(0.1)
            try:
                requested = client.call(CheckpointRequest())
            except ControlError as exc:
                print(
                    f"CheckpointRequest failed: {exc}\n(dynamicrl from {Path(dynamicrl.__file__).parent}, "
                    f"MAX_ARRAY_FRAMES={MAX_ARRAY_FRAMES})"
                )
                print("\n".join(line for line in fresh.log().splitlines() if "array frames" in line))
                raise SystemExit(1) from None
        wait_for(lambda: (run_dir / "checkpoints" / "iter-00000004" / "manifest.json").exists(), 300, fresh)
        fresh.kill9()
        killed_at = rows(run_dir)
        saves = SAVE_LINE.findall(fresh.log())

        # resume-run, timed to the services' "resumed at" lines and the first new metrics row
        resumed = Launched("dynamicrl.clients.cli", ["resume-run", str(run_dir)], env, tmp, "resume")
        launched.append(resumed)
        marks: dict[str, float] = {}
        for name in ("learner.1", "envrunner.1", "envrunner.2"):  # each logs "... resumed at iteration 4"
            wait_for(
                lambda name=name: re.search(rf"{re.escape(name)}\s+\|.*resumed at", resumed.log()),
                300,
                resumed,
                interval=0.005,
            )
            marks[name] = time.monotonic() - resumed.started
        checkpoint = run_dir / "checkpoints" / "iter-00000004"
        wait_for(lambda: rows(run_dir) > 4, 300, resumed)
        resumed_first_row = time.monotonic() - resumed.started
        try:
            with ControlClient(controller, timeout_s=2, retries=0) as client:
                client.status()
        except RequestTimeout:
            pass
        resumed.stop()
        in_process = in_process_restore(checkpoint)

        print(f"# Checkpoint size and timing: Ant-v5, 2 env-runners x {args.envs} envs, num_steps 256 ({tmp})")
        print(
            f"\nload: {os.getloadavg()[0]:.2f} (1 min); cores: {os.cpu_count()}; dynamicrl from "
            f"{Path(dynamicrl.__file__).parent} (MAX_ARRAY_FRAMES={MAX_ARRAY_FRAMES})"
        )
        print("\n## Save (controller log lines)\n")
        print("| checkpoint | bytes | write s | boundary -> on disk s |\n|---|---:|---:|---:|")
        for path, size, write_s, total_s in saves:
            print(f"| {Path(path).name} | {int(size):,} | {float(write_s):.3f} | {float(total_s):.3f} |")
        print(
            f"\nCheckpointRequest mid-run ({Path(str(requested.path)).name}): {requested.bytes:,} bytes, "
            f"{requested.seconds:.3f} s from the request to the files in place"
        )
        print(f"\nFiles of {checkpoint.name}:\n")
        for file in sorted(checkpoint.iterdir()):
            print(f"- {file.name}: {file.stat().st_size:,} bytes")
        print(f"\n## Restore\n\nkilled with metrics.csv at iteration {killed_at}; resumed from {checkpoint.name}\n")
        print(f"- fresh start: honcho launched -> first metrics row: {fresh_first_row:.2f} s")
        for name, at in marks.items():
            print(f"- resume-run launched -> {name} 'resumed at': {at:.2f} s")
        print(f"- resume-run launched -> first new metrics row (iteration 5): {resumed_first_row:.2f} s")
        print("\nIn process:\n")
        for what, value in in_process.items():
            print(f"- {what}: " + (f"{int(value):,}" if what.startswith("(") else f"{value * 1000:.1f} ms"))
    finally:
        for item in launched:
            item.stop()
        if not args.keep_dir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
