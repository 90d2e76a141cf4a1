"""Offline commands on a run's checkpoints: inspect, evaluate. They need no running services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from dynamicrl.clients.cli.options import Number


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
def inspect(path: str) -> None:
    """Verify a checkpoint (or a run's latest good one): manifest, every checksum, policy_sha256, that
    its iteration is one the run reached (the directory's name, the run's budget, env steps), that the
    learner's arrays fit the model its config builds, and whether the rotation (checkpoint.keep) keeps
    it and why.

    Example: dynamicrl inspect runs/RUN_ID
    """
    import json
    from pathlib import Path

    from dynamicrl.core import checkpoints

    try:
        target = checkpoints.resolve(Path(path), report=lambda m: click.echo(m, err=True))
        manifest, controller, parts = checkpoints.read(target)  # the policy's hash checked too
        actual = checkpoints.policy_sha256(checkpoints.policy_part(target, parts).arrays)
        unchecked = checkpoints.check_model(target, controller, parts)  # the state fits the config's model
    except checkpoints.CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"checkpoint {target}")
    click.echo(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=1))
    for name in sorted(manifest["files"]):
        click.echo(f"  ok  {name}  sha256 {manifest['files'][name][:16]}...")
    click.echo(f"kind: {manifest.get('kind', 'not recorded')}; {checkpoints.retention(target, manifest, controller)}")
    click.echo(f"model: {'not checked: ' + unchecked if unchecked else 'the state fits the model its config builds'}")
    click.echo(f"policy_sha256: {actual}")  # the last line, as scripts read it


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--episodes", "-n", type=click.IntRange(min=1), default=10, show_default=True, help="whole episodes to play"
)
@click.option("--stochastic", is_flag=True, help="sample actions as in training (default: the most likely action)")
@click.option("--seed", type=int, default=0, show_default=True, help="episode i is reset with seed + i")
@click.option(
    "--all",
    "every_checkpoint",
    is_flag=True,
    help="evaluate every good checkpoint the run kept, oldest first, and name the best",
)
@click.option("--json", "as_json", is_flag=True, help="print the result (every episode, mean, std) as JSON")
@click.option("--video", type=click.Path(dir_okay=False), help="record the first episodes to this MP4 file")
@click.option("--video-dir", type=click.Path(file_okay=False), help="with --all: one MP4 per checkpoint in this folder")
@click.option(
    "--video-episodes", type=click.IntRange(min=1), default=1, show_default=True, help="episodes each video holds"
)
@click.option(
    "--size",
    default="480x360",
    show_default=True,
    callback=lambda _ctx, _param, value: _frame_size(value),
    help="frame WIDTHxHEIGHT (even; MuJoCo envs; classic control draws its own size)",
)
@click.option("--fps", type=Number(min=0, min_open=True), help="video frame rate [default: the env's]")
@click.option(
    "--plugin",
    "plugins",
    metavar="MODULE",
    multiple=True,
    help="import this module first (repeatable): a plugin the run was trained with, e.g. one that registers its "
    "algorithm or env; never imported from the checkpoint itself",
)
def evaluate(
    path: str,
    episodes: int,
    stochastic: bool,
    seed: int,
    every_checkpoint: bool,
    as_json: bool,
    video: str | None,
    video_dir: str | None,
    video_episodes: int,
    size: tuple[int, int],
    fps: float | None,
    plugins: tuple[str, ...],
) -> None:
    """Play a checkpoint's policy (or a run's latest good one's) offline and report its returns.

    The policy acts with its most likely action and the learner's observation statistics, frozen,
    on the run's own env config: the final-policy figure SB3 rl-zoo's benchmark reports, where a
    run's own return is of training episodes with sampled actions. Needs no running services.
    With --all, every checkpoint the run kept (set checkpoint.every_iterations and checkpoint.keep
    to keep a series): how the policy itself improved, and which checkpoint to deploy.

    With --video (--video-dir with --all), the first --video-episodes episodes are recorded to an
    H.264 MP4; the returns are the same as without.

    A checkpoint never makes this import code: if its run was trained with a plugin (its config's
    `plugins`), pass it with --plugin MODULE; the error says which.

    Example: dynamicrl evaluate runs/RUN_ID --all -n 5
    Example: dynamicrl evaluate runs/RUN_ID --video ant.mp4 --video-episodes 2
    """
    import json
    import statistics
    from pathlib import Path

    from dynamicrl.clients.evaluate import Evaluation, evaluate_run, summary
    from dynamicrl.clients.evaluate import evaluate as run_evaluation
    from dynamicrl.core.video import Video

    if (video_dir and not every_checkpoint) or (video and every_checkpoint):
        raise click.UsageError("--video records one checkpoint; with --all, use --video-dir (one file per checkpoint)")
    film = video or video_dir
    recording = Video(Path(film), video_episodes, size, fps) if film else None

    def play(evaluation: Callable[..., Any]) -> Any:
        return evaluation(
            Path(path),
            episodes=episodes,
            deterministic=not stochastic,
            seed=seed,
            report=lambda m: click.echo(m, err=True),
            video=recording,
            plugins=plugins,
        )

    try:  # --all: every checkpoint kept; else the one named (or the run's latest good one)
        results: list[Evaluation] = play(evaluate_run) if every_checkpoint else [play(run_evaluation)]
    except (ValueError, NotImplementedError) as exc:  # CheckpointError, a bad env id: one message naming it
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results] if every_checkpoint else results[0].to_dict(), indent=2))
    elif every_checkpoint:
        kind = "stochastic" if stochastic else "deterministic"
        click.echo(f"{len(results)} checkpoint(s), {episodes} {kind} episode(s) each from seed {seed}:")
        for r in results:
            click.echo(
                f"  iteration {r.iteration:>7} ({r.env_steps:>10} env steps): return {r.mean:10.1f} "
                f"+- {r.std:.1f}, length {statistics.fmean(r.lengths):.0f}"
            )
            _echo_video(r, video_episodes)
        best = max(results, key=lambda r: r.mean)
        click.echo(f"best: {best.checkpoint} (iteration {best.iteration}, return {best.mean:.1f})")
    else:
        (result,) = results
        click.echo(f"checkpoint {result.checkpoint}")
        for i, (ret, length) in enumerate(zip(result.returns, result.lengths)):
            click.echo(f"  episode {i} (seed {seed + i}): return {ret:.1f}, length {length}")
        click.echo(summary(result))
        _echo_video(result, video_episodes)


def _frame_size(value: str) -> tuple[int, int]:
    from dynamicrl.core.settings import frame_size

    try:
        return frame_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _echo_video(result: Any, recorded: int) -> None:
    """The video's file and, next to it, the return and length of each episode it holds."""
    if result.video:
        shown = zip(result.returns[:recorded], result.lengths[:recorded])
        episodes = "; ".join(f"episode {i} return {ret:.1f}, length {n}" for i, (ret, n) in enumerate(shown))
        click.echo(f"  video {result.video}: {episodes}")


COMMANDS = (inspect, evaluate)
