"""Learner-side PPO: the clipped-surrogate update, CleanRL style.

``PPOAlgorithm.update`` reads top to bottom: the batch is prepared once
(``prepare``, ``with_advantages``), then epochs of shuffled minibatches, each
one call of ``minibatch_loss`` and one optimiser step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from ..base import Algorithm, Experience, StateMismatch, check_arrays
from .config import PPOConfig
from .gae import compute_gae
from .policy import ActorCritic, build_actor_critic, weights_to_numpy


class PPOAlgorithm(Algorithm):
    """Owns the actor-critic and its Adam optimiser; ``update`` is one PPO iteration.

    Hyperparameters tagged ``next_minibatch`` in ``PPOConfig`` are read from
    ``self.config`` before every gradient step, so a live patch (assigning a
    new config) lands at the next minibatch; the rest are read once per update.
    """

    def __init__(
        self,
        config: PPOConfig,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        seed: int,
        num_iterations: int,
    ) -> None:
        self.config = config
        self.num_iterations = max(1, num_iterations)
        self.net = build_actor_critic(config, observation_space, action_space, seed)
        # fused: one kernel for all parameters instead of a Python loop of ~10 ops per tensor (CPU: -17% update time)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-5, fused=True)
        # Own generator for minibatch shuffling: the update is a function of (seed, rollouts) only.
        self.generator = torch.Generator().manual_seed(seed)

    def get_weights(self) -> dict[str, np.ndarray]:
        return weights_to_numpy(self.net)

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {f"policy.{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            for slot, value in slots.items():
                arrays[f"optim.{index}.{slot}"] = value.detach().numpy().copy()
        arrays["rng.shuffle"] = self.generator.get_state().numpy().copy()
        return arrays, {"param_groups": optim["param_groups"]}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.check_state(arrays, meta)  # all of it, before anything is loaded
        self.net.load_state_dict(
            {k.removeprefix("policy."): torch.tensor(v) for k, v in arrays.items() if k.startswith("policy.")},
            strict=True,
        )
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            if key.startswith("optim."):
                _, index, slot = key.split(".", 2)
                slots.setdefault(int(index), {})[slot] = torch.tensor(value)
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
        self.generator.set_state(torch.tensor(arrays["rng.shuffle"], dtype=torch.uint8))

    def check_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """StateMismatch naming the first array (or meta field) of ``state()``'s output that does not fit
        this network and optimiser: the shapes of the network the run's config builds, Adam's slots
        (``optim.<param>.<slot>``) of their parameter's shape, the shuffling generator's state."""
        check_arrays(arrays, {f"policy.{k}": tuple(v.shape) for k, v in self.net.state_dict().items()}, "policy.")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        for key in (k for k in arrays if k.startswith("optim.")):
            _, index, slot = (*key.split(".", 2), "")[:3]
            if not index.isdigit() or int(index) >= len(params) or slot not in ("step", "exp_avg", "exp_avg_sq"):
                raise StateMismatch(f"array {key:.80} is not a slot of this optimiser ({len(params)} parameters)")
            shape = () if slot == "step" else tuple(params[int(index)].shape)
            if arrays[key].shape != shape:
                raise StateMismatch(f"array {key} has shape {arrays[key].shape}; its parameter's slot has {shape}")
        rng = tuple(self.generator.get_state().shape)
        if "rng.shuffle" not in arrays or arrays["rng.shuffle"].shape != rng:
            found = arrays["rng.shuffle"].shape if "rng.shuffle" in arrays else "missing"
            raise StateMismatch(f"array rng.shuffle: {found}; the generator's state has shape {rng}")
        groups = meta.get("param_groups")
        if (
            not isinstance(groups, list)
            or len(groups) != len(self.optimizer.param_groups)
            or any(not isinstance(g, dict) or not isinstance(g.get("params"), list) for g in groups)
            or [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.optimizer.param_groups]
        ):
            raise StateMismatch("meta param_groups does not match this optimiser's parameter groups")

    def learning_rate(self, iteration: int, batch_size: int) -> float:
        """``lr``, when ``anneal_lr`` decayed linearly to 0 by ``anneal_env_steps`` or else by the run's last
        update. ``iteration`` counts the updates done, each of ``batch_size`` env steps."""
        cfg = self.config
        if not cfg.anneal_lr:
            return cfg.lr
        spent = (
            iteration / self.num_iterations
            if cfg.anneal_env_steps is None
            else iteration * batch_size / cfg.anneal_env_steps
        )
        return cfg.lr * max(0.0, 1.0 - spent)

    def update(
        self, experience: Experience, iteration: int, safe_point: Callable[[int], None] | None = None
    ) -> dict[str, float]:
        experience.validate()
        cfg = self.config
        # next_iteration settings: fixed for this update
        num_epochs, num_minibatches, recompute_adv = cfg.update_epochs, cfg.num_minibatches, cfg.recompute_adv
        gamma, gae_lambda = cfg.gamma, cfg.gae_lambda
        batch_size = experience.num_steps * experience.num_envs
        if num_minibatches > batch_size:
            raise ValueError(f"num_minibatches={num_minibatches} exceeds the batch size {batch_size}")
        batch, values, lag_kl = self.prepare(experience)
        batch, returns = self.with_advantages(batch, experience, values, gamma, gae_lambda)
        ev = explained_variance(values, returns)  # of the critic the update starts from
        params = list(self.net.parameters())  # once: walking the modules every minibatch costs ~20 us
        sizes = [len(mb) for mb in torch.arange(batch_size).tensor_split(num_minibatches)]

        stats: list[torch.Tensor] = []  # per minibatch: policy, value, entropy losses, kl, clip frac, grad norm
        for epoch in range(num_epochs):
            if epoch > 0 and recompute_adv:  # the critic has learnt since: fresher advantages
                with torch.no_grad():
                    values = self.net.get_value(batch.obs).numpy().reshape(experience.values.shape)
                batch, _ = self.with_advantages(batch, experience, values, gamma, gae_lambda)
            epoch_kls = []
            # Shuffle the whole batch once per epoch (one gather per tensor); minibatches are then views.
            perm = torch.randperm(batch_size, generator=self.generator)
            for minibatch in batch.minibatches(perm, sizes):
                if safe_point is not None:
                    safe_point(len(stats))
                cfg = self.config  # a live patch of a next_minibatch setting lands here
                lr = self.learning_rate(iteration, batch_size)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, losses = minibatch_loss(self.net, minibatch, cfg)
                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                stats.append(torch.stack([*losses, grad_norm.detach()]))
                epoch_kls.append(losses.approx_kl)
            # The epoch's mean KL: steadier than the last minibatch's alone.
            if cfg.target_kl is not None and torch.stack(epoch_kls).mean().item() > cfg.target_kl:
                break

        *losses_mean, grad_norm_mean = torch.stack(stats).mean(0).tolist()
        return {
            **dict(zip(MinibatchLosses._fields, losses_mean)),
            "explained_variance": ev,
            "lr": lr,
            "grad_norm": grad_norm_mean,
            "epochs": float(epoch + 1),
            "lag_kl": lag_kl,
        }

    def prepare(self, experience: Experience) -> tuple[Batch, np.ndarray, float]:
        """The flat batch (advantages still empty), the values it starts from and the lag's KL.

        The ratio is clipped against the "proximal" policy. Without a lag that is the one that
        acted; with one (overlap mode) it is the policy at this update's start, and each sample is
        weighted by proximal / acting probability, so the lag does not eat into the clip range.
        Likewise the advantages and the value clip start from this update's critic, not the
        acting one's, which has not yet learnt from the previous rollout.
        """
        obs = _tensor(experience.obs).flatten(0, 1)
        action_dtype = torch.int64 if self.net.discrete else torch.float32
        actions = torch.tensor(experience.actions, dtype=action_dtype).flatten(0, 1)
        logprobs = _tensor(experience.logprobs).flatten()
        weights = torch.ones_like(logprobs)
        values, lag_kl = experience.values, 0.0
        if experience.policy_lag and self.config.decoupled:
            with torch.no_grad():
                _, proximal, _, current_values = self.net.get_action_and_value(obs, actions)
                log_w = proximal - logprobs
                weights = log_w.exp()
                lag_kl = ((weights - 1) - log_w).mean().item()
            logprobs = proximal
            values = current_values.numpy().reshape(experience.values.shape)
        empty = torch.empty(0)
        return Batch(obs, actions, logprobs, empty, empty, empty, weights), values, lag_kl

    def with_advantages(
        self, batch: Batch, experience: Experience, values: np.ndarray, gamma: float, gae_lambda: float
    ) -> tuple[Batch, np.ndarray]:
        """``batch`` with ``values`` and the advantages and returns GAE gives for them (bootstrapped
        by the current critic); the returns also as an array, for the explained variance."""
        with torch.no_grad():
            last_values = self.net.get_value(_tensor(experience.last_obs)).numpy()
        advantages, returns = compute_gae(
            experience.rewards,
            values,
            experience.dones,
            experience.trunc_values,
            last_values,
            experience.last_dones,
            gamma,
            gae_lambda,
        )
        flat = (_tensor(a).flatten() for a in (values, advantages, returns))
        return batch._replace(**dict(zip(("values", "advantages", "returns"), flat))), returns


class Batch(NamedTuple):
    """An update's samples, time and envs flattened: row ``i`` of every tensor is one sample."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor  # under the proximal policy (see PPOAlgorithm.prepare)
    values: torch.Tensor  # what the value clip starts from
    advantages: torch.Tensor
    returns: torch.Tensor  # the critic's targets
    weights: torch.Tensor  # proximal / acting probability; ones without a lag

    def minibatches(self, perm: torch.Tensor, sizes: list[int]) -> Iterator[Batch]:
        """The batch in the order ``perm``, cut into consecutive minibatches of ``sizes``."""
        for columns in zip(*(t[perm].split(sizes) for t in self)):
            yield Batch(*columns)


class MinibatchLosses(NamedTuple):
    """A minibatch's loss terms and diagnostics, detached (the metric names are the field names)."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_frac: torch.Tensor


def minibatch_loss(net: ActorCritic, mb: Batch, cfg: PPOConfig) -> tuple[torch.Tensor, MinibatchLosses]:
    """PPO's loss on one minibatch (clipped surrogate, clipped value loss, entropy bonus) and its terms."""
    _, newlogprob, entropy, newvalue = net.get_action_and_value(mb.obs, mb.actions)
    logratio = newlogprob - mb.logprobs
    ratio = logratio.exp()
    with torch.no_grad():
        # Low-variance unbiased KL estimator, http://joschu.net/blog/kl-approx.html
        approx_kl = ((ratio - 1) - logratio).mean()
        clip_frac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

    advantages = mb.advantages
    if cfg.norm_adv and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    # Pessimistic (max of negatives) clipped surrogate.
    pg_losses = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
    pg_loss = (pg_losses * mb.weights).mean()

    v_loss_unclipped = (newvalue - mb.returns) ** 2
    if cfg.clip_vloss:
        v_clipped = mb.values + (newvalue - mb.values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - mb.returns) ** 2).mean()
    else:
        v_loss = 0.5 * v_loss_unclipped.mean()

    entropy_loss = entropy.mean()
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    return loss, MinibatchLosses(pg_loss.detach(), v_loss.detach(), entropy_loss.detach(), approx_kl, clip_frac)


def explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float:
    """1 - Var[targets - predictions] / Var[targets]: 1 is perfect, <= 0 no better than a constant (nan if Var=0)."""
    var_targets = float(np.var(targets))
    if var_targets == 0.0:
        return float("nan")
    return float(1.0 - np.var(targets - predictions) / var_targets)


def _tensor(array: np.ndarray) -> torch.Tensor:
    # torch.tensor copies: rollout arrays may be read-only views of a received message buffer.
    return torch.tensor(array, dtype=torch.float32)
