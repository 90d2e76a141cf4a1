"""What videos while training cost: the showcase (Ant-v5) with and without a clip every N iterations.

Runs the showcase config (configs/experiments/mujoco_ant_interactive.yaml: 2 env-runners x 4
envs, overlap mode) twice, one after the other in this one invocation: videos off, then
``video.every_iterations=N`` with a previewer process beside the run. Prints each variant's
training SPS (from metrics.csv: env steps over wall time, first row to last), their ratio, the
clips written and the previewer's CPU seconds per clip (utime + stime from /proc). Measures and
prints; asserts nothing.

    python bench/video_cost.py --steps 61440 --every 10 [--size 160x120] [--max-steps 200]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from harness import Run, cpu_ticks

REPO = Path(__file__).resolve().parents[1]
SHOWCASE = REPO / "configs/experiments/mujoco_ant_interactive.yaml"


def measure(workdir: Path, steps: int, every: int | None, clip: list[str]) -> dict[str, float]:
    workdir.mkdir(parents=True)
    video = [f"video.every_iterations={every}", *clip] if every else ["video.every_iterations=null"]
    run = Run(workdir, [f"run.total_env_steps={steps}", *video], config=SHOWCASE, envrunners=2)
    previewer_ticks = 0
    try:
        run.start()
        if every:
            run._start("previewer", "previewer")
        deadline = time.monotonic() + 1800
        while any(p.poll() is None for label, p in run.procs.items() if label != "previewer"):
            if time.monotonic() > deadline:
                raise SystemExit(f"not done after 1800 s: {run.dead()}")
            if "previewer" in run.procs:
                previewer_ticks = cpu_ticks(run.procs["previewer"].pid) or previewer_ticks
            time.sleep(0.2)
    finally:
        run.stop()
    (run_dir,) = (workdir / "runs").iterdir()
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    sps = (int(last["env_steps"]) - int(first["env_steps"])) / (float(last["time"]) - float(first["time"]))
    clips = len(list((run_dir / "videos").glob("*.mp4"))) if (run_dir / "videos").is_dir() else 0
    return {"sps": sps, "clips": clips, "previewer_cpu_s": previewer_ticks / os.sysconf("SC_CLK_TCK")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=61440, help="env steps per variant")
    parser.add_argument("--every", type=int, default=10, help="video.every_iterations of the second variant")
    parser.add_argument("--size", default=None, help="video.size (default: the config's)")
    parser.add_argument("--max-steps", type=int, default=None, help="video.max_steps (default: the config's)")
    args = parser.parse_args()
    clip = [f"video.size={args.size}"] * bool(args.size) + [f"video.max_steps={args.max_steps}"] * bool(args.max_steps)
    with tempfile.TemporaryDirectory() as tmp:
        off = measure(Path(tmp) / "off", args.steps, None, clip)
        print(f"videos off:            {off['sps']:8.0f} env steps/s", flush=True)
        on = measure(Path(tmp) / "on", args.steps, args.every, clip)
        label = f"a clip every {args.every} iterations ({' '.join(clip) or 'the config clip'})"
        print(f"{label}: {on['sps']:8.0f} env steps/s, {on['clips']:.0f} clip(s) written")
    print(f"SPS ratio (videos / none): {on['sps'] / off['sps']:.3f}")
    if on["clips"]:
        print(
            f"previewer CPU: {on['previewer_cpu_s']:.1f} s in all, {on['previewer_cpu_s'] / on['clips']:.1f} s per clip"
        )


if __name__ == "__main__":
    main()
