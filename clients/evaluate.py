"""Evaluate a checkpointed policy offline: whole episodes, no bus, no running services.

Why a separate evaluation: the returns a run reports are of training episodes, acted by a
policy that still samples its actions (exploration) and changes while the episode runs. What a
user deploys, and what SB3 rl-zoo's benchmark reports, is the final policy taking its most
likely action. This rebuilds that policy from a checkpoint exactly as the learner would resume
it (its algorithm's ``load_state``, so a plugin algorithm works too), normalises observations
with the learner's statistics, frozen, and plays ``episodes`` episodes of the run's own env
config, one env, episode ``i`` reset with seed ``seed + i``: the same checkpoint and seed give
the same returns.

``evaluate_run`` does this for every checkpoint a run kept: an evaluation curve of the policy
itself, the test curve Tianshou reports and the way to pick the best checkpoint, not the last.

With ``video``, the same episodes are played in an env that also renders, and the first few are
recorded (``core/video.py``): the frames are drawn from the env's state, never fed back, so the
returns are those of an evaluation without video.

A checkpoint is data: the ``plugins`` its config names are never imported from it. The caller
names the plugins to import (``plugins``, from ``dynamicrl evaluate --plugin``); a checkpoint
whose config names one that was not given fails with PluginNeeded, saying which to pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dynamicrl.core import checkpoints
from dynamicrl.core.settings import (
    ConfigError,
    PluginError,
    config_from_dict,
    import_plugins,
    plugin_name,
    plugins_text,
)

if TYPE_CHECKING:
    import gymnasium as gym

    from dynamicrl.core.video import Video


class PluginNeeded(ValueError):
    """The checkpoint's run was trained with plugins the caller did not pass (they are never imported from it)."""


def plugin_options(names: Sequence[str], limit: int = 5) -> str:
    """``--plugin a --plugin b``: how ``dynamicrl evaluate`` takes ``names`` (bounded, as plugins_text)."""
    more = [f"(and {len(names) - limit} more)"] if len(names) > limit else []
    return " ".join([*(f"--plugin {plugin_name(n)}" for n in names[:limit]), *more])


@dataclass(frozen=True)
class Evaluation:
    checkpoint: str
    env_id: str
    iteration: int
    env_steps: int
    deterministic: bool
    seed: int
    returns: list[float]
    lengths: list[int]
    video: str | None = None  # the MP4 of the first episodes, if recorded

    @property
    def mean(self) -> float:
        return statistics.fmean(self.returns)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.returns)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "std": self.std}


def evaluate(
    path: Path,
    episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    report: Callable[[str], None] = print,
    envs: dict[str, gym.Env] | None = None,
    video: Video | None = None,
    plugins: Sequence[str] = (),
) -> Evaluation:
    """Play ``episodes`` episodes with the checkpoint's policy; CheckpointError names what is wrong.

    ``plugins``: modules to import first (the caller's, never the checkpoint's); PluginNeeded if the
    checkpoint's config names one that is not among them.

    ``envs``: envs to reuse, by env config, left open (each episode resets with its seed, so a
    reused env plays as a new one); without it the env is made here and closed. ``video``: record
    the first ``video.episodes`` episodes; RenderError (before any episode) if the env cannot.
    """
    from dynamicrl.core.algorithms import get_algorithm, load_class
    from dynamicrl.core.envs import make_env
    from dynamicrl.core.playback import make_actor, make_normalizer, play_episode, policy
    from dynamicrl.core.video import Recorder, make_render_env

    import_plugins(plugins, "--plugin")
    target = checkpoints.resolve(path, report)
    manifest, controller, parts = checkpoints.read(target)
    try:
        config = config_from_dict(controller["config"], origin=str(target / "controller.json"), imported=plugins)
    except PluginError as exc:
        raise PluginNeeded(
            f"{target}: this checkpoint was trained with plugin(s) {plugins_text(exc.missing)[1:-1]}, which are "
            f"never imported from a checkpoint: pass {plugin_options(exc.missing)}"
        ) from None
    except (ConfigError, KeyError) as exc:
        raise checkpoints.CheckpointError(f"{target / 'controller.json'}: no usable run config: {exc}") from None
    learner = checkpoints.policy_part(target, parts)
    own, envs = envs is None, {} if envs is None else envs
    key = config.env.model_dump_json() + (f" rendered at {video.size}" if video else "")
    if key not in envs:
        envs[key] = make_render_env(config.env, video.size) if video else make_env(config.env)
    env = envs[key]
    recorder = Recorder(env, video) if video else None
    try:
        algorithm = load_class(get_algorithm(config.algo.name).learner)(
            config.algo, env.observation_space, env.action_space, seed=config.run.seed, num_iterations=1
        )
        checkpoints.load_state(target, learner, algorithm)
        act = policy(make_actor(config, env, algorithm.get_weights(), seed), deterministic)
        statistics = {k.removeprefix("norm."): v for k, v in learner.arrays.items() if k.startswith("norm.")}
        normalizer = make_normalizer(config, env, statistics)
        returns, lengths = [], []
        for episode in range(episodes):
            total, steps = play_episode(env, act, normalizer, seed + episode, recorder, episode)
            returns.append(total)
            lengths.append(steps)
    finally:
        if recorder:
            recorder.close()
        if own:
            env.close()
    return Evaluation(
        checkpoint=str(target),
        env_id=config.env.id,
        iteration=manifest["iteration"],
        env_steps=manifest["env_step"],
        deterministic=deterministic,
        seed=seed,
        returns=returns,
        lengths=lengths,
        video=str(video.path) if video else None,
    )


def evaluate_run(
    path: Path,
    episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    report: Callable[[str], None] = print,
    video: Video | None = None,
    plugins: Sequence[str] = (),
) -> list[Evaluation]:
    """Every good checkpoint of a run directory (or of a checkpoints directory), oldest first.

    A bad checkpoint is reported and skipped, as resuming skips it; CheckpointError if none is good;
    PluginNeeded (not skipped) if one needs a plugin ``plugins`` does not name.
    ``video``: its ``path`` is a directory, one file per checkpoint in it (``iter-00000032.mp4``).
    """
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = [path] if (path / "manifest.json").exists() else list(reversed(checkpoints.complete(root)))
    results: list[Evaluation] = []
    # one env for all the checkpoints: built, and its model compiled (warnings too), once
    envs: dict[str, gym.Env] = {}
    try:
        for checkpoint in found:
            try:
                film = replace(video, path=video.path / f"{checkpoint.name}.mp4") if video else None
                results.append(evaluate(checkpoint, episodes, deterministic, seed, report, envs, film, plugins))
            except checkpoints.CheckpointError as exc:
                report(f"skipping a bad checkpoint: {exc}")
    finally:
        for env in envs.values():
            env.close()
    if not results:
        raise checkpoints.CheckpointError(f"{root}: no complete checkpoint to evaluate")
    return results


def summary(result: Evaluation) -> str:
    kind = "deterministic" if result.deterministic else "stochastic"
    spread = f" +- {result.std:.1f}" if len(result.returns) > 1 else ""
    return (
        f"{result.env_id} at iteration {result.iteration} ({result.env_steps} env steps), "
        f"{len(result.returns)} {kind} episode(s) from seed {result.seed}: "
        f"return {result.mean:.1f}{spread}, length {statistics.fmean(result.lengths):.0f}"
    )
