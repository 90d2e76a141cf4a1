"""The learner: turns every env-runner's rollout into one update, then answers with weights.

Iteration *k* waits for rollout *k* from every rank and concatenates them in
rank order (not arrival order, so the result does not depend on timing).
Sync mode then updates and answers each env-runner with the weights after
update *k*. Overlap mode answers first, with the current weights, so the
env-runners collect rollout *k + 1* while update *k* runs: a fixed
one-iteration policy lag, still deterministic, corrected by PPO's importance
ratio against the behaviour policy's log-probs.

The learner also owns the observation/return normalisation statistics: it
merges the moments each rollout carries (in rank order) and ships the result
with the weights, so every env-runner normalises alike.

Checkpoints are taken where every process stands still: in sync mode after
update *k*, before the weights go out; in overlap mode the env-runners are
collecting then, so a due checkpoint waits for the next boundary, once every
rollout is in and none is answered, and saves those unanswered rollouts too.

Every rollout is validated before any use (``core/rollout_check.py``) and a bad one is refused
naming the field. One from a stranger changes nothing; one from the run's own env-runner (a buggy
env producing NaN, most often) means the run cannot go on: the learner leaves after a last
checkpoint at the boundary before it, and its goodbye gives the controller the reason to stop.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import zmq

from dynamicrl.core import checkpoints, tunables
from dynamicrl.core.algorithms.base import Algorithm, Experience
from dynamicrl.core.normalization import RunningMeanStd, pack, unpack
from dynamicrl.core.rollout_check import RolloutSpec, rollout_problem
from dynamicrl.core.settings import Config
from dynamicrl.protocol.codec import Session, decode
from dynamicrl.protocol.messages import (
    CheckpointPart,
    ErrorCode,
    ErrorReply,
    LogicalTime,
    PolicyRequest,
    PolicyWeights,
    Role,
    Rollout,
    TrainingDone,
    TrainMetrics,
)
from dynamicrl.protocol.security import Peer
from dynamicrl.protocol.sockets import Routed, bind, make_socket, recv_routed, send_routed
from dynamicrl.services.base import Service, setup_logging

log = logging.getLogger(__name__)

#: beyond ``checkpoint.timeout_s``, how long the learner holds for ``CheckpointDone``: the controller
#: abandons an overdue checkpoint itself (and says why), so this only catches one it never finishes
HOLD_MARGIN_S = 2.0
#: roles whose keys may read the weights (a client's may not: they are the run's to hand out)
POLICY_READERS = frozenset({Role.ENVRUNNER.value, Role.PREVIEWER.value})


class Learner(Service):
    role = Role.LEARNER

    def run(self) -> int:
        self.register()
        import torch

        from dynamicrl.core.algorithms import get_algorithm, load_class
        from dynamicrl.core.envs import make_env

        cfg = self.config
        torch.set_num_threads(cfg.run.torch_threads)
        probe = make_env(cfg.env)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        self.algorithm_cls: type[Algorithm] = load_class(get_algorithm(cfg.algo.name).learner)
        self.data = make_socket(self.ctx, zmq.ROUTER)
        bind(self.data, cfg.addresses.data)
        self.data_session = Session(self.name, self.run_id)
        start = self.ready_and_wait()
        self.members = set(start.members)
        self.rank_owners: dict[int, str] = {}  # rank -> the env-runner that sent it first
        try:
            self.train(start.envrunners, start.restore)
        finally:
            self.data.close()
            self.close()
        return self.exit_code

    def train(self, envrunners: int, restore: CheckpointPart | None = None) -> None:
        from dynamicrl.core.envs import space_shape

        cfg = self.config
        self.envrunners = envrunners
        self.steps_per_iteration = cfg.algo.num_steps * cfg.env.num_envs * envrunners
        self.algorithm = self.algorithm_cls(
            cfg.algo, self.observation_space, self.action_space, seed=cfg.run.seed, num_iterations=self.num_iterations
        )
        self.weights = self.algorithm.get_weights()
        self.obs_rms = RunningMeanStd(space_shape(self.observation_space))
        self.ret_rms = RunningMeanStd(())
        self.overlap = cfg.run.mode == "overlap"
        self.iteration = 0
        self.env_steps = 0
        self.pending: dict[int, tuple[Routed | None, Rollout]] = {}  # None: restored from a checkpoint
        # overlap mode: what the rollouts in flight are collected with, served before the update they follow
        # (a lag of one). None at the start and after a run's last update, which is answered after it: a run
        # that trains on from its final checkpoint (a larger budget) collects one lag-free round.
        self.served: PolicyWeights | None = None
        self.deferred_checkpoint: str | None = None  # overlap mode: due, taken at the next boundary
        self.episodes: deque[tuple[float, int]] = deque(maxlen=cfg.metrics.return_window)
        self.spec = RolloutSpec(cfg.algo.num_steps, cfg.env.num_envs, self.observation_space, self.action_space)
        self.refused = ""  # why the run's own env-runner's rollout was refused: the run cannot go on
        self.saved_at: int | None = None  # the iteration of the last checkpoint on disk
        if restore is not None:
            try:
                self.load_checkpoint(restore)
            except checkpoints.CheckpointError as exc:  # state that does not fit this run's model: nothing loaded
                self.refuse_restore(str(exc))
                return
        self.iteration_started = time.perf_counter()
        log.info(
            "training %d iteration(s) of %d env steps from %d env-runner(s)",
            self.num_iterations,
            self.steps_per_iteration,
            envrunners,
        )
        while not self.stopping:
            self.safe_point(LogicalTime(iteration=self.iteration, env_step=self.env_steps), minibatch=0)
            if self.refused:
                self.leave_after_checkpoint()
                break
            if len(self.pending) < envrunners:
                if not self.wait(self.data, 100):
                    continue
                # A full set is trained on before anything else is read: an env-runner's next rollout (in
                # overlap mode, after rollouts restored from a checkpoint) belongs to the next iteration.
                while len(self.pending) < envrunners and self.data.poll(0):
                    routed = recv_routed(self.data, self.data_session)
                    if routed is not None:
                        self.on_data(routed)
            if len(self.pending) == envrunners:
                self.safe_point(minibatch=0)  # the iteration boundary: next-iteration patches land here
                if not self.stopping:
                    self.train_iteration()

    def on_data(self, routed: Routed) -> None:
        message = routed.received.message
        if isinstance(message, PolicyRequest):
            if routed.peer is not None and routed.peer.role not in POLICY_READERS:
                who = f"{routed.peer.role}/{routed.peer.name}"
                self.reply(routed, ErrorReply(code=ErrorCode.REJECTED, message=f"{who} may not read the policy"))
                return
            self.reply(routed, self.served or self.policy(done=self.iteration >= self.num_iterations))
        elif isinstance(message, Rollout):
            problem = self.check(message) if self.own_member(routed) else "not sent by an env-runner of this run"
            problem = problem or self.bind_rank(routed.received.envelope.sender, message.rank)
            if not problem:
                self.pending[message.rank] = (routed, message)
                return
            sender = routed.received.envelope.sender
            problem = f"rollout from {sender} (rank {message.rank}): {problem}"
            self.reply(routed, ErrorReply(code=ErrorCode.REJECTED, message=problem))
            if self.own_member(routed):
                self.refused = self.refused or problem
            else:
                log.warning("refused %s", problem)
        else:
            self.reply(
                routed, ErrorReply(code=ErrorCode.UNEXPECTED, message=f"the data socket does not take {message.TYPE}")
            )

    def own_member(self, routed: Routed) -> bool:
        """Sent by an env-runner of this run over its own connection (a DEALER named after it) with its
        own key, not by a stranger using its name: the ROUTER keeps one connection per identity."""
        sender, peer = routed.received.envelope.sender, routed.peer
        return (
            sender in self.members
            and routed.route == [sender.encode()]
            and (peer is None or peer == Peer(Role.ENVRUNNER.value, sender))
        )

    def bind_rank(self, sender: str, rank: int) -> str:
        """A rank belongs to the first env-runner that sends it ('' if ``sender`` owns ``rank``)."""
        owner = self.rank_owners.setdefault(rank, sender)
        return "" if owner == sender else f"rank {rank} is {owner}'s"

    def check(self, rollout: Rollout) -> str:
        """Why a rollout cannot be used ('' if it can); nothing changes on refusal. Its content first, so
        a bad rollout is refused for what is wrong with it whenever it comes."""
        problem = rollout_problem(rollout, self.spec)
        if problem:
            return problem
        if rollout.rank >= self.envrunners:
            return f"rank {rollout.rank} is not in this run of {self.envrunners} env-runner(s)"
        expected = self.served.version if self.served is not None else self.iteration
        if rollout.version != expected:
            return f"collected with policy {rollout.version}, iteration {self.iteration} needs policy {expected}"
        if rollout.rank in self.pending:
            return f"rank {rollout.rank} already sent iteration {self.iteration}"
        return ""

    def leave_after_checkpoint(self) -> None:
        """The run's own env-runner sent what cannot be trained on: stop here, after a last checkpoint at
        this boundary (unless one is on disk already). The rollouts in flight are left out of it (the
        env-runners save their state as at this boundary), so a resumed run never sees the bad one.
        The goodbye carries the reason: the controller stops the run with it (exit 1)."""
        if self.saved_at != self.iteration:
            self.take_checkpoint(f"periodic-{self.iteration}", [])
        self.exit_code = 1
        self.stopping, self.stop_reason = True, self.refused  # not stop(): the controller says it, once

    def train_iteration(self) -> None:
        """One iteration once every rank's rollout is in: update, publish metrics, answer the env-runners."""
        ordered = [self.pending[rank] for rank in sorted(self.pending)]
        rollouts = [rollout for _, rollout in ordered]
        if self.deferred_checkpoint is not None:  # overlap mode: every rollout is in and none answered
            self.take_checkpoint(self.deferred_checkpoint, rollouts)
            self.deferred_checkpoint = None
        # rollouts restored from a checkpoint (no route) had their moments merged at load, before serving
        self.merge_moments([rollout for routed, rollout in ordered if routed is not None])
        values_seen = {f"normalizer/obs_count_used_rank{r.rank}": r.normalizer_count for r in rollouts}
        values_seen["normalizer/obs_count"] = self.obs_rms.count
        answer_first = self.overlap and self.iteration + 1 < self.num_iterations  # the last is answered after
        if answer_first:  # collection of k+1 runs while update k trains
            self.served = self.policy(done=False)
            for routed, _ in ordered:
                if routed is not None:  # restored ones asked with a PolicyRequest (answered with `served`)
                    self.reply(routed, self.served)
            self.pending.clear()
        experience = Experience.concatenate(rollouts)
        experience.policy_lag = self.iteration - rollouts[0].version  # 1 in overlap mode (after the first iteration)
        metrics = self.algorithm.update(
            experience, self.iteration, safe_point=lambda k: self.safe_point(minibatch=k, boundary=False)
        )
        self.weights = self.algorithm.get_weights()
        self.iteration += 1
        self.env_steps += self.steps_per_iteration
        for rollout in rollouts:
            self.episodes.extend(zip(rollout.episode_returns, rollout.episode_lengths))
        now = time.perf_counter()
        sps = self.steps_per_iteration / max(now - self.iteration_started, 1e-9)
        self.iteration_started = now
        finished = sum(len(r.episode_returns) for r in rollouts)
        ltime = LogicalTime(iteration=self.iteration, env_step=self.env_steps)
        self.bus.publish(
            TrainMetrics(
                iteration=self.iteration,
                env_steps=self.env_steps,
                sps=round(sps, 1),
                return_mean=float(np.mean([r for r, _ in self.episodes])) if self.episodes else None,
                length_mean=float(np.mean([n for _, n in self.episodes])) if self.episodes else None,
                episodes=finished,
                values={**{k: float(v) for k, v in metrics.items()}, **values_seen},
                hyperparameters={**rollouts[0].hyperparameters, **self.hyperparameters()},
            ),
            ltime=ltime,
        )
        self.ltime = ltime
        if self.iteration >= self.num_iterations:  # a budget patch that came during the last update still counts
            self.safe_point(ltime, minibatch=0)
        done = self.iteration >= self.num_iterations
        self.checkpoint_if_due(done, defer=answer_first)
        if done:  # before the env-runners hear it, so their goodbyes do not look like desertion
            self._send(TrainingDone(ltime=ltime))
        if self.pending:  # sync mode, or the last iteration
            for routed, _ in ordered:
                if routed is not None:
                    self.reply(routed, self.policy(done=done))
            self.pending.clear()
            self.served = None

    def merge_moments(self, rollouts: list[Rollout]) -> None:
        """Fold the rollouts' normaliser moments into the statistics, in rank order (so they do not
        depend on arrival order), before the weights that ship them are served."""
        for rollout in sorted(rollouts, key=lambda r: r.rank):
            for prefix, stats in (("obs", self.obs_rms), ("ret", self.ret_rms)):
                moments = unpack(prefix, rollout.moments)
                if moments is not None:
                    stats.merge(moments["count"][0], moments["mean"], moments["var"])

    # -- checkpoints: at the iteration boundary, before the env-runners get the new weights --
    def checkpoint_if_due(self, done: bool, defer: bool) -> None:
        """``defer``: the env-runners are collecting (overlap mode), so wait for the next boundary."""
        every = self.config.checkpoint.every_iterations
        if self.checkpoint_requests:
            ckpt_id = self.checkpoint_requests.pop(0).ckpt_id
        elif (every and self.iteration % every == 0) or (done and self.config.checkpoint.at_end):
            kind = "end" if done and self.config.checkpoint.at_end else "periodic"
            ckpt_id = f"{kind}-{self.iteration}"  # the controller records the kind its id names
        else:
            return
        if defer:
            self.deferred_checkpoint = ckpt_id
        else:
            self.take_checkpoint(ckpt_id, [])

    def take_checkpoint(self, ckpt_id: str, unanswered: list[Rollout]) -> None:
        """Send the learner's state, with the rollouts it holds unanswered (overlap mode), and stand still."""
        try:
            arrays, meta = self.algorithm.state()
        except NotImplementedError as exc:
            log.warning("no checkpoint: %s", exc)
            self.send_checkpoint_part(ckpt_id, {}, {"error": str(exc)})
            return
        arrays.update({f"norm.{k}": v for k, v in self.statistics().items()})
        session, frame_sizes = Session(self.name, self.run_id), {}
        for rollout in unanswered:  # as protocol frames, one array per rollout: the codec round-trips every field
            frames = [bytes(f) for f in session.encode(rollout)]
            arrays[f"rollout.{rollout.rank}"] = np.frombuffer(b"".join(frames), np.uint8)
            frame_sizes[str(rollout.rank)] = [len(f) for f in frames]
        # the env-runners' boundary counts rollouts sent; it is one ahead of the updates when some are unanswered
        meta.update(
            iteration=self.iteration,
            env_steps=self.env_steps,
            episodes=list(self.episodes),
            boundary=self.iteration + (1 if unanswered else 0),
            rollout_frames=frame_sizes,
        )
        self.send_checkpoint_part(ckpt_id, arrays, meta)
        if self.hold_for_checkpoint(ckpt_id):
            self.saved_at = self.iteration

    def hold_for_checkpoint(self, ckpt_id: str) -> bool:
        """Stand still until the controller has the checkpoint on disk (True) or says it failed; bounded,
        so a checkpoint the controller never finishes cannot stall training while status says running.
        Like a safe point (pauses, heartbeats) but no patch applies: the part lists the queued ones."""
        limit_s = self.config.checkpoint.timeout_s + HOLD_MARGIN_S
        deadline = time.monotonic() + limit_s
        self.hold_patches = True
        try:
            while ckpt_id not in self.checkpoint_done and not self.stopping:
                if time.monotonic() > deadline:
                    log.error(
                        "checkpoint %s abandoned: no word from the controller in %g s; training goes on",
                        ckpt_id,
                        limit_s,
                    )
                    return False
                self.link.poll(100)
                self.safe_point(minibatch=0)
        finally:
            self.hold_patches = False
        done = self.checkpoint_done.pop(ckpt_id, None)
        if done is not None and not done.ok:
            log.error("%s: checkpoint %s failed: %s", self.name, ckpt_id, done.message)
        return done is not None and done.ok

    def refuse_restore(self, problem: str) -> None:
        """The checkpoint's state cannot be resumed: one line, and leave with it as the reason (the controller
        stops the run with exit 1). The learner has not trained, so it takes no checkpoint."""
        log.error("%s: cannot resume: %s", self.name, problem)
        self.exit_code = 1
        self.stopping, self.stop_reason = True, f"cannot resume: {problem}"

    def load_checkpoint(self, part: CheckpointPart) -> None:
        """Continue from ``part``; CheckpointError naming the checkpoint and the array if it does not fit the
        model this run's config builds (checked before anything is loaded)."""
        problem = checkpoints.load_problem(part.arrays, part.meta, self.algorithm)
        if problem:
            raise checkpoints.CheckpointError(
                f"{Path(self.run_dir, 'checkpoints', part.ckpt_id, part.service)}.npz: {problem}"
            )
        self.weights = self.algorithm.get_weights()
        norm = {k.removeprefix("norm."): v for k, v in part.arrays.items() if k.startswith("norm.")}
        for prefix, stats in (("obs", self.obs_rms), ("ret", self.ret_rms)):
            moments = unpack(prefix, norm)
            if moments is not None:
                stats.load(moments)
        self.iteration, self.env_steps = part.meta["iteration"], part.meta["env_steps"]
        self.episodes.extend(tuple(e) for e in part.meta["episodes"])
        restored = self.unanswered_rollouts(part.arrays, part.meta.get("rollout_frames", {}))
        for rollout in restored:
            self.pending[rollout.rank] = (None, rollout)
        if restored:  # overlap mode: collection goes on with what these rollouts were answered with: the
            self.merge_moments(restored)  # weights of the update before, the statistics merged with theirs
            self.served = self.policy(done=False)
        self.restore_pending_patches(part.meta)
        self.ltime = LogicalTime(iteration=self.iteration, env_step=self.env_steps)
        self.saved_at = self.iteration
        log.info("resumed at iteration %d, %d env steps", self.iteration, self.env_steps)

    @staticmethod
    def unanswered_rollouts(arrays: dict[str, np.ndarray], frame_sizes: dict[str, list[int]]) -> list[Rollout]:
        rollouts = []
        for rank, sizes in sorted(frame_sizes.items(), key=lambda item: int(item[0])):
            data = arrays[f"rollout.{rank}"].tobytes()
            bounds = np.cumsum([0, *sizes])
            rollouts.append(decode([data[a:b] for a, b in itertools.pairwise(bounds)], expect=[Rollout]).message)
        return rollouts

    def hyperparameters(self) -> dict:
        return {row.name: row.value for row in tunables.describe(self.config) if row.owner is Role.LEARNER}

    @property
    def num_iterations(self) -> int:
        """Updates in the run's budget: the first iteration boundary at or past ``run.total_env_steps``."""
        return math.ceil(self.config.run.total_env_steps / self.steps_per_iteration)

    def on_config_changed(self) -> None:
        self.algorithm.config = self.config.algo
        self.algorithm.num_iterations = self.num_iterations  # a live budget patch moves the lr schedule's end too

    def statistics(self) -> dict[str, np.ndarray]:
        """The normalisation moments as arrays (``obs.*``, ``ret.*``): shipped with weights, saved in checkpoints."""
        return {**pack("obs", self.obs_rms), **pack("ret", self.ret_rms)}

    def policy(self, done: bool) -> PolicyWeights:
        normalizer = self.statistics()
        gamma = getattr(self.config.algo, "gamma", None)
        if gamma is not None:  # the env-runners' return accumulators discount alike, live patches included
            normalizer["ret.gamma"] = np.array([gamma], np.float64)
        return PolicyWeights(version=self.iteration, weights=self.weights, done=done, normalizer=normalizer)

    def reply(self, routed: Routed, message) -> None:
        send_routed(self.data, self.data_session, routed.route, message, parent=routed.received.envelope.id)


def main(local: Config) -> int:
    learner = Learner(local, rank=0)
    setup_logging(learner.name)
    return learner.run()
