"""The previewer: draws what the run does, beside it, never in it. Two jobs:

* **Clips**: one episode of the current policy every ``video.every_iterations`` (and after each
  checkpoint with ``video.at_checkpoints``). It learns the iteration from the bus
  (``metrics.train``, ``control.checkpoint_saved``), asks the learner's data socket for the policy
  with a ``PolicyRequest`` (a read: the learner answers it from its state without changing it), and
  plays it, most likely action, in an env of its own reset with its own seed
  (``run.seed + 999999 + iteration``). The policy is fetched as soon as the trigger is read, so it
  is that iteration's (in overlap mode the learner serves the one before); its version names the
  file, ``runs/<id>/videos/iter-<iteration>.mp4``, with a JSON and a small GIF beside it.
* **Pause previews**: at a complete pause barrier the controller hands over copies of the
  env-runners' sub-env states (``RenderPreviews``); each is put into a second env of its own and
  drawn, ``runs/<id>/previews/pause-<n>/<service>-<k>.png``, then announced (``PreviewsSaved``).

Training is bitwise the same with or without it: nothing of the run's is touched. It is an
observer: it never holds up the start or a pause (between env steps it answers the controller at
once), and the run does not wait for it. It runs at ``video.nice`` (10: training preempts it) and
films within ``video.cpu_budget`` (2% of the machine), so on a busy machine clips come late and
skip triggers rather than cost steps/s.

With nothing to draw it does not join the run: it waits, silent, until signalled, because under
``honcho start`` a process that exits ends the whole set (honcho signals it when the run ends);
``dynamicrl run`` leaves it out instead. An env that cannot render is one warning, and no clips.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import zmq

from dynamicrl.core.settings import Config, frame_size
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import (
    CheckpointSaved,
    ErrorReply,
    LogicalTime,
    PolicyRequest,
    PolicyWeights,
    PreviewsSaved,
    RenderPreviews,
    Role,
    TrainMetrics,
    VideoSaved,
)
from dynamicrl.protocol.sockets import Subscriber, connect, make_socket
from dynamicrl.services.base import Service, setup_logging

log = logging.getLogger(__name__)

SEED_OFFSET = 999_999  # clips' seeds, run.seed + this + iteration: far from the env-runners' seeds


class _Stopped(Exception):
    """The run stops while a clip is being recorded: the clip is dropped."""


class Previewer(Service):
    role = Role.PREVIEWER
    observer = True

    def run(self) -> int:
        self.register()
        cfg = self.config
        self.sub = Subscriber(self.ctx, cfg.addresses.bus_out, [TrainMetrics.TYPE, CheckpointSaved.TYPE])
        self.data: zmq.Socket | None = None
        self.env: Any = None  # the clips' env
        self.still_env: Any = None  # the previews' env
        self.filming = cfg.video.enabled  # False for good after an env that cannot render
        self.previews_due: deque[RenderPreviews] = deque(maxlen=8)  # pauses not drawn yet, oldest first
        self.no_previews: str | None = None  # why this run gets none (an env that cannot render)
        self._handlers[RenderPreviews] = lambda received: self.previews_due.append(received.message)
        lower_priority(cfg.video.nice)
        self.wanted: PolicyWeights | None = None  # the policy of the latest trigger, not filmed yet
        self.recorded: set[int] = set()
        self.env_steps: dict[int, int] = {0: 0}  # iteration -> env steps trained, from metrics.train
        try:
            start = self.ready_and_wait()
            self.steps_per_iteration = cfg.algo.num_steps * cfg.env.num_envs * start.envrunners
            self.prepare()  # while the run trains: torch and the render envs, so the first clip comes in time
            while not self.stopping:
                self.safe_point()
                if self.wait(self.sub.socket, 100):
                    self.take_triggers()
                self.draw_previews()
                if self.wanted is not None and not self.stopping:
                    served, self.wanted = self.wanted, None
                    self.record(served)
        finally:
            for env in (self.env, self.still_env):
                if env is not None:
                    env.close()
            if self.data is not None:
                self.data.close()
            self.sub.close()
            self.close()
        return 0

    def take_triggers(self) -> None:
        """Read the bus; on a trigger, fetch the policy at once (while the learner still serves that
        iteration's), to be filmed next. A clip still being recorded then loses nothing but time; a
        later trigger replaces a policy not filmed yet, so a slow previewer skips clips, never lags."""
        if self.drain() and self.filming:
            served = self.ask_policy()
            if served is not None and served.version not in self.recorded:
                self.wanted = served

    def drain(self) -> bool:
        """Take what the bus brought; True if it calls for a clip."""
        self.missed = self.sub.gaps.missed
        video, due = self.config.video, False
        while self.sub.socket.poll(0):
            received = self.sub.receive()
            message = received.message if received is not None else None
            if isinstance(message, TrainMetrics):
                self.env_steps[message.iteration] = message.env_steps
                self.ltime = LogicalTime(iteration=message.iteration, env_step=message.env_steps)
                due |= video.every_iterations is not None and message.iteration % video.every_iterations == 0
            elif isinstance(message, CheckpointSaved):
                due |= video.at_checkpoints
        return due

    def record(self, served: PolicyWeights) -> None:
        """One clip of ``served``: the file, its JSON and GIF, then the event on the bus."""
        from dynamicrl.core.playback import make_actor, make_normalizer, play_episode, policy
        from dynamicrl.core.video import Gif, Recorder, RenderError, Video

        cfg, iteration = self.config, served.version
        size, seed = frame_size(cfg.video.size), cfg.run.seed + SEED_OFFSET + iteration
        videos = Path(self.run_dir) / "videos"
        part = videos / f"iter-{iteration}.part.mp4"  # renamed when complete: a stop leaves no half clip
        recorder = None
        env = self.env
        try:
            act = policy(make_actor(cfg, env, served.weights, seed), deterministic=True)
            normalizer = make_normalizer(cfg, env, served.normalizer)
            fps = cfg.video.fps or env.metadata.get("render_fps") or 30
            recorder = Recorder(env, Video(part, 1, size, fps), Gif(fps))
            self.clip_started = (time.process_time(), time.monotonic())
            total, length = play_episode(
                env, act, normalizer, seed, recorder, each_step=self.between_steps, max_steps=cfg.video.max_steps
            )
            recorder.close()
            mp4 = part.rename(videos / f"iter-{iteration}.mp4")
        except RenderError as exc:  # an env that renders nothing at all is refused by prepare()
            log.warning("%s: no videos in this run: %s", self.name, exc)
            self.filming = False
            return
        except _Stopped:
            return
        finally:
            if recorder is not None:
                recorder.close()
            part.unlink(missing_ok=True)  # a clip not complete
        self.recorded.add(iteration)
        gif = mp4.with_suffix(".gif")
        assert recorder.gif is not None  # made with one above
        gif.write_bytes(recorder.gif.encode())
        height, width = recorder.shape[:2]
        saved = VideoSaved(
            path=str(mp4),
            gif=str(gif),
            iteration=iteration,
            env_step=self.env_steps.get(iteration, iteration * self.steps_per_iteration),
            episode_return=total,
            length=length,
            frames=recorder.frames,
            width=width,
            height=height,
            seed=seed,
        )
        summary = {k: getattr(saved, k) for k in ("iteration", "env_step", "episode_return", "length", "seed")}
        mp4.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
        self.bus.publish(saved, ltime=self.ltime)
        log.debug("%s: clip %s: return %.1f, length %d", self.name, mp4, total, length)

    def prepare(self) -> None:
        """The render envs, made once, and a first frame drawn (a GL context takes seconds to make);
        an env that cannot render is one warning, and no clips or previews."""
        from dynamicrl.core.algorithms import get_algorithm, load_class
        from dynamicrl.core.video import RenderError

        video = self.config.video
        try:
            if video.pause_previews:  # stills are few: they are worth MuJoCo's shadows
                self.still_env = self.render_env(shadows=True)
            if self.filming:
                load_class(get_algorithm(self.config.algo.name).actor)  # its module imports torch: done now
                self.env = self.render_env(shadows=video.shadows)
        except RenderError as exc:
            log.warning("%s: no videos or pause previews in this run: %s", self.name, exc)
            self.filming, self.no_previews = False, str(exc)

    def render_env(self, shadows: bool) -> Any:
        from dynamicrl.core.video import frame, make_render_env

        env = make_render_env(self.config.env, frame_size(self.config.video.size), shadows=shadows)
        env.reset(seed=self.config.run.seed + SEED_OFFSET)
        frame(env)
        return env

    def draw_previews(self) -> None:
        """Draw every pause handed over and not drawn yet; announce each, with its error if it has none."""
        from dynamicrl.core import envstate
        from dynamicrl.core.video import RenderError, frame, write_png

        while self.previews_due and not self.stopping:
            job, started = self.previews_due.popleft(), time.monotonic()
            folder = Path(self.run_dir) / "previews" / f"pause-{job.pause}"
            paths, shape = [], (0, 0)
            error = self.no_previews or (None if self.still_env is not None else "video.pause_previews is off")
            for scene in job.scenes if error is None else []:
                try:
                    envstate.show(self.still_env, scene.kind, scene.state)
                    image = frame(self.still_env)
                except (RenderError, ValueError) as exc:
                    error = f"{scene.service} sub-env {scene.index}: {exc}"
                    log.warning("%s: pause %d: no preview of %s", self.name, job.pause, error)
                    break
                paths.append(str(write_png(folder / f"{scene.service}-{scene.index}.png", image)))
                shape = image.shape[:2]
            self.bus.publish(
                PreviewsSaved(
                    pause=job.pause,
                    ltime=job.ltime,
                    paths=paths,
                    width=shape[1],
                    height=shape[0],
                    seconds=round(time.monotonic() - started, 4),
                    error=error,
                ),
                ltime=job.ltime,
            )

    def between_steps(self) -> None:
        """Between env steps: answer the controller (a pause at once), draw a pause's previews (its own
        env: the clip's is not touched), take triggers, keep to the CPU budget; stop if told to."""
        self.safe_point()
        self.draw_previews()
        if self.sub.socket.poll(0):
            self.take_triggers()
        self.keep_to_budget()
        if self.stopping:
            raise _Stopped

    def keep_to_budget(self) -> None:
        """Wait (answering the controller and the bus) while the clip has used more CPU than
        ``video.cpu_budget`` of the machine allows for the time it has taken: a clip costs training at
        most that share, whatever the machine, and comes later instead (the render threads count too)."""
        budget = self.config.video.cpu_budget
        if budget is None:
            return
        rate = budget * len(os.sched_getaffinity(0))  # CPU seconds allowed per second
        cpu0, wall0 = self.clip_started
        while not self.stopping and (ahead := (time.process_time() - cpu0) / rate - (time.monotonic() - wall0)) > 0:
            if self.wait(self.sub.socket, max(1, int(1000 * min(ahead, 0.1)))):
                self.take_triggers()
            self.draw_previews()

    def ask_policy(self) -> PolicyWeights | None:
        """The learner's current policy, weights and normaliser statistics (None if stopping or refused)."""
        if self.data is None:
            self.data = make_socket(self.ctx, zmq.DEALER, identity=self.name.encode())
            connect(self.data, self.config.addresses.data)
            self.data_session = Session(self.name, self.run_id)
        reply = self.request(self.data, self.data_session, PolicyRequest(rank=0), (PolicyWeights, ErrorReply))
        if isinstance(reply, ErrorReply):
            log.warning("%s: the learner refused a policy request: %s", self.name, reply.message)
        return reply if isinstance(reply, PolicyWeights) else None


def lower_priority(nice: int) -> None:
    """Run at ``nice``, before any render or torch thread starts (they inherit it). Linux shares CPU
    between autogroups (one per session) before it looks at nice values inside one: under honcho,
    which starts each process in a session of its own, the previewer's nice would change nothing, so
    a previewer that leads its session sets its autogroup's nice too."""
    os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
    if os.getsid(0) == os.getpid():
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
        except OSError:  # no autogroups (another kernel, or CONFIG_SCHED_AUTOGROUP off): nothing to set
            pass


def main(local: Config) -> int:
    if not local.video.previewer:
        return idle()
    previewer = Previewer(local)
    setup_logging(previewer.name)
    return previewer.run()


def idle() -> int:
    """Nothing to draw: join nothing, say nothing, and exit 0 when signalled (honcho does so when the run ends)."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.sigwait(signals)
    return 0
