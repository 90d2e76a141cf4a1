"""Write realistic checkpoints in a loop until killed (a helper of test_checkpoint_resume.py).

    python checkpoint_writer.py ROOT FIRST_ITERATION KEEP [SEED]

Builds one synthetic checkpoint the size and shape the controller writes for a
small MuJoCo run (a learner part with policy, optimiser and normaliser arrays,
two env-runner parts with env state, a few MB in all) and then calls
``checkpoints.write`` again and again with iterations FIRST, FIRST+1, ... into
ROOT, printing ``wrote <iteration>`` after each, until it is killed. Every
third write repeats the previous iteration, so rewriting an existing boundary
is killed too. Nothing here is pickled; the arrays are seeded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dynamicrl.core import checkpoints


def parts(iteration: int, seed: int) -> list[checkpoints.Part]:
    rng = np.random.default_rng(seed)
    learner: dict[str, np.ndarray] = {}
    for net in ("actor", "critic"):  # hidden layers of 512: ~2.5 MB of float32 parameters with Adam's two slots
        for layer, (fan_in, fan_out) in enumerate([(27, 512), (512, 512), (512, 8 if net == "actor" else 1)]):
            for kind, shape in (("weight", (fan_out, fan_in)), ("bias", (fan_out,))):
                name = f"{net}.{layer}.{kind}"
                learner[f"policy.{name}"] = rng.standard_normal(shape).astype(np.float32)
                learner[f"optim.{name}.exp_avg"] = rng.standard_normal(shape).astype(np.float32)
                learner[f"optim.{name}.exp_avg_sq"] = rng.random(shape).astype(np.float32)
    learner["rng.shuffle"] = rng.integers(0, 256, 5056, dtype=np.uint8)
    learner["norm.obs.mean"], learner["norm.obs.var"] = rng.standard_normal(27), rng.random(27)
    meta = {
        "iteration": iteration,
        "env_steps": iteration * 4096,
        "episodes": [[12.5, 100]] * 20,
        "num_iterations": 10**6,
        "param_groups": [{"lr": 3e-4, "params": list(range(12))}],
    }
    result = [checkpoints.Part("learner.1", learner, meta)]
    for rank in (1, 2):
        arrays: dict[str, np.ndarray] = {
            "obs": rng.standard_normal((8, 27)),
            "episode_return": rng.standard_normal(8),
            "episode_length": rng.integers(0, 1000, 8),
            "rng.actor": rng.integers(0, 256, 5056, dtype=np.uint8),
        }
        for env in range(8):  # like Ant-v5's: the integration state, and the other MjData arrays packed
            arrays[f"env.{env}.mj_state"] = rng.standard_normal(500)
            arrays[f"env.{env}.mj_derived"] = rng.integers(0, 256, 22_000, dtype=np.uint8)
        result.append(
            checkpoints.Part(
                f"envrunner.{rank}",
                arrays,
                {
                    "iteration": iteration,
                    "env_steps": iteration * 2048,
                    "envs": [{"kind": "mujoco", "elapsed_steps": 3, "mj_derived": [["xpos", "<f8", [14, 3]]] * 100}]
                    * 8,
                },
            )
        )
    return result


def main() -> None:
    root, iteration, keep = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    state = parts(iteration, seed)  # built once: the kills should land in write(), not in numpy's RNG
    count = 0
    while True:
        for part in state:
            part.meta["iteration"] = iteration
        controller = {
            "run_id": "synthetic",
            "learner": "learner.1",
            "config": {},
            "journal_entries": 0,
            "iteration": iteration,
            "env_step": iteration * 4096,
        }
        checkpoints.write(root, iteration, iteration * 4096, state, controller, keep=keep)
        print(f"wrote {iteration}", flush=True)
        count += 1
        if count % 3:
            iteration += 1


if __name__ == "__main__":
    main()
