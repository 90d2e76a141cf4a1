"""The env-runner: steps a vector of environments with the latest policy.

Loop: ask the learner for the policy, collect ``num_steps`` steps from each
env (a safe point between env steps), ship the rollout, act with the weights
the learner answers with. Registration happens before the environments and
the algorithm's actor are imported, so every env-runner that honcho starts is
on the roster in well under a second. PPO's actor is numpy: torch is imported
only for an actor that uses it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import zmq

from dynamicrl.core import envstate, tunables
from dynamicrl.core.normalization import Normalizer
from dynamicrl.core.settings import Config
from dynamicrl.protocol.codec import Session
from dynamicrl.protocol.messages import (
    CheckpointPart,
    EpisodeStats,
    ErrorCode,
    ErrorReply,
    LogicalTime,
    PolicyRequest,
    PolicyWeights,
    Role,
    Rollout,
    Scene,
)
from dynamicrl.protocol.sockets import connect, make_socket
from dynamicrl.services.base import Service, rank_from_environment, setup_logging

if TYPE_CHECKING:
    from dynamicrl.core.algorithms.base import Actor

log = logging.getLogger(__name__)

MAX_SCENES = 32  # sub-envs drawn at a pause, per env-runner: a bound on the barrier report


class EnvRunner(Service):
    role = Role.ENVRUNNER

    def run(self) -> int:
        self.register()  # before the imports below: the roster must not wait on them
        import sys

        from dynamicrl.core.algorithms import get_algorithm, load_class
        from dynamicrl.core.envs import env_seed, make_vector_env

        cfg = self.config
        self.seed = env_seed(cfg.run.seed, self.rank)
        self.said_no_scenes, self.envs_reset = False, False
        self.envs = make_vector_env(cfg.env)
        actor_cls: type[Actor] = load_class(get_algorithm(cfg.algo.name).actor)
        if "torch" in sys.modules:  # a torch-based actor (a plugin's): fixed threads for reproducibility
            sys.modules["torch"].set_num_threads(cfg.run.torch_threads)
        self.actor = actor_cls(
            cfg.algo, self.envs.single_observation_space, self.envs.single_action_space, seed=self.seed
        )
        self.data = make_socket(self.ctx, zmq.DEALER, identity=self.name.encode())
        connect(self.data, cfg.addresses.data)
        self.data_session = Session(self.name, self.run_id)
        start = self.ready_and_wait()
        try:
            self.loop(start.restore)
        finally:
            self.envs.close()
            self.data.close()
            self.close()
        return self.exit_code

    def loop(self, restore: CheckpointPart | None = None) -> None:
        from dynamicrl.core.envs import space_shape

        cfg = self.config
        self.normalizer = Normalizer(
            cfg.normalize,
            space_shape(self.envs.single_observation_space),
            self.envs.num_envs,
            getattr(cfg.algo, "gamma", 0.99),
        )
        obs, _ = self.envs.reset(seed=self.seed)  # first: a pause while the weights are awaited has scenes
        self.envs_reset = True
        weights = self.exchange(PolicyRequest(rank=self.rank))
        self.episode_return = np.zeros(self.envs.num_envs)
        self.episode_length = np.zeros(self.envs.num_envs, dtype=np.int64)
        self.env_steps = 0
        self.iteration = 0  # rollouts sent; the policy version may lag by one in overlap mode
        if restore is not None:
            obs = self.load_checkpoint(restore)
        while weights is not None and not weights.done and not self.stopping:
            self.actor.load_weights(weights.weights)
            self.normalizer.load(weights.normalizer)
            rollout, obs = self.collect(obs, weights.version)
            if rollout is None:
                break
            weights = self.exchange(rollout)
            self.hold_patches = False
            self.iteration += 1
        if weights is not None and weights.done:
            self.finished = True
            self.stop("training done")

    def collect(self, obs: np.ndarray, version: int) -> tuple[Rollout | None, np.ndarray]:
        """One rollout of ``num_steps`` vector steps; ``obs`` are raw observations."""
        from gymnasium.spaces import Box  # imported by run() already: gymnasium stays off the start path

        from dynamicrl.core.envs import clip_to_space, space_shape

        cfg, envs, actor, norm = self.config, self.envs, self.actor, self.normalizer
        steps, n = cfg.algo.num_steps, envs.num_envs
        space = envs.single_action_space
        box = isinstance(space, Box)
        buf = {
            "obs": np.zeros((steps, n, *space_shape(envs.single_observation_space)), np.float32),
            "actions": np.zeros((steps, n, *space_shape(space)), np.float32 if box else np.int64),
            "logprobs": np.zeros((steps, n), np.float32),
            "values": np.zeros((steps, n), np.float32),
            "rewards": np.zeros((steps, n), np.float32),
            "dones": np.zeros((steps, n), bool),
            "trunc_values": np.zeros((steps, n), np.float32),
        }
        returns, lengths = [], []
        started = time.perf_counter()
        for t in range(steps):
            self.safe_point(LogicalTime(iteration=self.iteration, env_step=self.env_steps))
            if self.stopping:
                return None, obs
            cfg = self.config  # a patch (e.g. envrunner.reward_scale) replaces it at the safe point
            policy_obs = norm.observe(obs)
            actions, logprobs, values = actor.act(policy_obs)
            next_obs, rewards, terminated, truncated, infos = envs.step(clip_to_space(actions, space))
            dones = terminated | truncated
            buf["obs"][t], buf["actions"][t] = policy_obs, actions
            buf["logprobs"][t], buf["values"][t] = logprobs, values
            buf["rewards"][t] = norm.reward(rewards * cfg.envrunner.reward_scale, dones)
            buf["dones"][t] = dones
            cut = truncated & ~terminated
            if cut.any():
                final = np.stack([infos["final_obs"][i] for i in np.flatnonzero(cut)])
                buf["trunc_values"][t, cut] = actor.value(norm.peek(final))
            self.episode_return += rewards
            self.episode_length += 1
            for i in np.flatnonzero(dones):
                returns.append(float(self.episode_return[i]))
                lengths.append(int(self.episode_length[i]))
                self.episode_return[i], self.episode_length[i] = 0.0, 0
            obs = next_obs
            self.env_steps += n
        if returns:
            self.bus.publish(EpisodeStats(rank=self.rank, env_steps=self.env_steps, returns=returns, lengths=lengths))
        rollout = Rollout(
            rank=self.rank,
            version=version,
            **buf,
            last_obs=norm.peek(obs),
            last_dones=buf["dones"][-1].copy(),
            episode_returns=returns,
            episode_lengths=lengths,
            collect_s=time.perf_counter() - started,
            hyperparameters={
                row.name: row.value for row in tunables.describe(self.config) if row.owner is Role.ENVRUNNER
            },
            normalizer_count=norm.obs.count if cfg.normalize.obs else 0.0,
            moments=norm.take_moments(),
        )
        self.obs = obs  # raw observations at the boundary (a checkpoint saves them)
        # every step is taken and the rollout is complete: a patch or pause from here until the next
        # weights is at this position (not at the last step's), and a replay applies it here too
        self.safe_point(LogicalTime(iteration=self.iteration, env_step=self.env_steps))
        if self.stopping:
            return None, obs
        return rollout, obs

    def exchange(self, message: Rollout | PolicyRequest) -> PolicyWeights | None:
        """Send to the learner and wait for the policy to act with next (None if stopping)."""
        at_boundary = (
            (lambda: self.checkpoint_if_asked(boundary=self.iteration + 1)) if isinstance(message, Rollout) else None
        )
        reply = self.request(self.data, self.data_session, message, (PolicyWeights, ErrorReply), at_boundary)
        if isinstance(reply, ErrorReply):
            self.exit_code = 1
            if isinstance(message, Rollout) and reply.code is ErrorCode.REJECTED:
                self.await_stop_after_refusal(reply.message)
            else:
                log.error("%s: the learner refused %s: %s", self.name, message.TYPE, reply.message)
                self.stop(f"refused by the learner: {reply.message}")
            return None
        return reply if isinstance(reply, PolicyWeights) else None

    def await_stop_after_refusal(self, problem: str) -> None:
        """The learner refused our rollout: the run cannot go on, and the learner leaves after a last
        checkpoint that needs our part (as at the boundary before that rollout), then the controller
        stops the run, saying why. So stay at the boundary until then; bounded, in case nobody does."""
        log.debug("%s: the learner refused its rollout: %s", self.name, problem)
        limit_s = self.config.checkpoint.timeout_s + self.config.timing.signal_grace_s
        deadline = time.monotonic() + limit_s
        self.hold_patches = True  # the state stays the boundary's until the checkpoint is taken
        while not self.stopping:
            if time.monotonic() > deadline:
                log.error("%s: the learner refused its rollout (%s); no stop came in %g s", self.name, problem, limit_s)
                self.stop(f"refused by the learner: {problem}")
                return
            self.checkpoint_if_asked(boundary=self.iteration + 1)
            self.link.poll(100)
            self.safe_point()

    def scenes(self) -> list[Scene]:
        """Each sub-env's simulator state, copied here at the barrier: the previewer draws it in an env of
        its own, so training continues from state nothing else touched. An env without a known state
        gives none, said once."""
        if not self.envs_reset:  # a pause while the first weights are awaited: no scene yet
            return []
        try:
            captured = [envstate.scene(env) for env in self.envs.envs[:MAX_SCENES]]
        except envstate.UnsupportedEnv as exc:
            if not self.said_no_scenes:
                log.warning("%s: no pause previews: %s", self.name, exc)
                self.said_no_scenes = True
            return []
        return [Scene(service=self.name, index=i, kind=kind, state=state) for i, (kind, state) in enumerate(captured)]

    # -- checkpoints: at the iteration boundary, i.e. a rollout sent and its answer awaited --
    def checkpoint_if_asked(self, boundary: int) -> None:
        """``boundary``: rollouts sent. A checkpoint one boundary back is the learner's last one after
        it refused a rollout: the one in flight is left out, as if it had never been collected."""
        for command in list(self.checkpoint_requests):
            in_flight_dropped = command.at_iteration == boundary - 1
            if command.at_iteration != boundary and not in_flight_dropped:
                log.error(
                    "%s: checkpoint %s wants iteration %s but this env-runner is at %d",
                    self.name,
                    command.ckpt_id,
                    command.at_iteration,
                    boundary,
                )
            else:
                try:
                    at = boundary - 1 if in_flight_dropped else boundary
                    arrays, meta = self.checkpoint_state(at, in_flight_dropped)
                except (NotImplementedError, envstate.UnsupportedEnv) as exc:
                    log.warning("%s: no checkpoint: %s", self.name, exc)
                    arrays, meta = {}, {"error": str(exc)}
                self.send_checkpoint_part(command.ckpt_id, arrays, meta)
                # until the weights come, patches wait: the saved state lists them as pending, so
                # applying one now would apply (and journal) it twice after a resume
                self.hold_patches = True
            self.checkpoint_requests.remove(command)

    def checkpoint_state(self, boundary: int, in_flight_dropped: bool = False) -> tuple[dict, dict]:
        """``in_flight_dropped``: saved as at ``boundary`` without the rollout sent since (its env steps
        uncounted); the envs go on from where that rollout left them."""
        env_steps = self.env_steps - (self.config.algo.num_steps * self.envs.num_envs if in_flight_dropped else 0)
        arrays = {
            "obs": self.obs,
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
            "norm.returns": self.normalizer.returns,
            "rng.actor": self.actor.rng_state(),
        }
        if in_flight_dropped:  # a NaN reward of the refused rollout must not outlive it in the accumulators
            for name in ("episode_return", "norm.returns"):
                arrays[name] = np.where(np.isfinite(arrays[name]), arrays[name], 0.0)
        envs_meta = []
        for i, env in enumerate(self.envs.envs):
            env_arrays, env_meta = envstate.capture(env)
            arrays.update({f"env.{i}.{k}": v for k, v in env_arrays.items()})
            envs_meta.append(env_meta)
        return arrays, {"iteration": boundary, "env_steps": env_steps, "envs": envs_meta}

    def load_checkpoint(self, part: CheckpointPart) -> np.ndarray:
        """Continue exactly where the checkpoint stood; returns the raw observations to act on."""
        a, meta = part.arrays, part.meta
        for i, env in enumerate(self.envs.envs):
            prefix = f"env.{i}."
            envstate.restore(
                env, {k.removeprefix(prefix): v for k, v in a.items() if k.startswith(prefix)}, meta["envs"][i]
            )
        self.episode_return, self.episode_length = a["episode_return"].copy(), a["episode_length"].copy()
        self.normalizer.returns = a["norm.returns"].copy()
        self.actor.load_rng_state(a["rng.actor"])
        self.iteration, self.env_steps = meta["iteration"], meta["env_steps"]
        self.restore_pending_patches(meta)
        self.ltime = LogicalTime(iteration=self.iteration, env_step=self.env_steps)
        log.info("%s resumed at iteration %d, %d env steps", self.name, self.iteration, self.env_steps)
        return a["obs"].copy()


def main(local: Config, rank: int | None = None) -> int:
    rank = rank if rank is not None else rank_from_environment()
    runner = EnvRunner(local, rank=rank)
    setup_logging(runner.name)
    return runner.run()
