"""Learner-side PPO: the clipped-surrogate update, CleanRL style."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from ..base import Algorithm, Rollout
from .config import PPOConfig
from .gae import compute_gae
from .policy import build_actor_critic, weights_to_numpy


class PPOAlgorithm(Algorithm):
    """Owns the actor-critic and its Adam optimiser; ``update`` is one PPO iteration.

    Hyperparameters tagged ``next_minibatch`` in ``PPOConfig`` are read from
    ``self.config`` before every gradient step, so a live patch (assigning a
    new config) lands at the next minibatch; the rest are read once per update.
    """

    def __init__(self, config: PPOConfig, observation_space: spaces.Space, action_space: spaces.Space,
                 seed: int, num_iterations: int) -> None:
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
        self.net.load_state_dict({k.removeprefix("policy."): torch.tensor(v) for k, v in arrays.items()
                                  if k.startswith("policy.")}, strict=True)
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in arrays.items():
            if key.startswith("optim."):
                _, index, slot = key.split(".", 2)
                slots.setdefault(int(index), {})[slot] = torch.tensor(value)
        self.optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
        self.generator.set_state(torch.tensor(arrays["rng.shuffle"], dtype=torch.uint8))

    def learning_rate(self, iteration: int, batch_size: int) -> float:
        """``lr``, when ``anneal_lr`` decayed linearly to 0 by ``anneal_env_steps`` or else by the run's last
        update. ``iteration`` counts the updates done, each of ``batch_size`` env steps."""
        cfg = self.config
        if not cfg.anneal_lr:
            return cfg.lr
        spent = (iteration / self.num_iterations if cfg.anneal_env_steps is None
                 else iteration * batch_size / cfg.anneal_env_steps)
        return cfg.lr * max(0.0, 1.0 - spent)

    def _gae(self, rollout: Rollout, values: np.ndarray, gamma: float, gae_lambda: float
             ) -> tuple[np.ndarray, np.ndarray]:
        """Advantages and returns of ``rollout`` given its ``values``, bootstrapped by the current critic."""
        with torch.no_grad():
            last_values = self.net.get_value(_tensor(rollout.last_obs)).numpy()
        return compute_gae(rollout.rewards, values, rollout.dones, rollout.trunc_values,
                           last_values, rollout.last_dones, gamma, gae_lambda)

    def update(self, rollout: Rollout, iteration: int,
               safe_point: Callable[[int], None] | None = None) -> dict[str, float]:
        rollout.validate()
        cfg = self.config
        # fixed for this update (next_iteration settings)
        num_epochs, num_minibatches, recompute_adv = cfg.update_epochs, cfg.num_minibatches, cfg.recompute_adv
        gamma, gae_lambda = cfg.gamma, cfg.gae_lambda
        batch_size = rollout.num_steps * rollout.num_envs
        if num_minibatches > batch_size:
            raise ValueError(f"num_minibatches={num_minibatches} exceeds the batch size {batch_size}")

        # Flatten time and envs once; minibatches index into these tensors.
        b_obs = _tensor(rollout.obs).flatten(0, 1)
        action_dtype = torch.int64 if self.net.discrete else torch.float32
        b_actions = torch.tensor(rollout.actions, dtype=action_dtype).flatten(0, 1)
        b_logprobs = _tensor(rollout.logprobs).flatten()
        values = rollout.values

        # The ratio is clipped against the "proximal" policy. Without a lag that is the one that acted;
        # with one (overlap mode) it is the policy at this update's start, and each sample is weighted
        # by proximal / acting probability, so the lag does not eat into the clip range. Likewise the
        # advantages and the value clip start from this update's critic, not the acting one's, which
        # has not yet learnt from the previous rollout.
        lag_kl = 0.0
        b_weights = None
        if rollout.policy_lag and cfg.decoupled:
            with torch.no_grad():
                _, b_prox, _, b_current_values = self.net.get_action_and_value(b_obs, b_actions)
                log_w = b_prox - b_logprobs
                b_weights = log_w.exp()
                lag_kl = ((b_weights - 1) - log_w).mean().item()
            b_logprobs = b_prox
            values = b_current_values.numpy().reshape(rollout.values.shape)

        def batch_from(values: np.ndarray) -> tuple[tuple[torch.Tensor, ...], np.ndarray]:
            advantages, returns = self._gae(rollout, values, gamma, gae_lambda)
            return (b_obs, b_actions, b_logprobs, _tensor(values).flatten(), _tensor(advantages).flatten(),
                    _tensor(returns).flatten(), *([] if b_weights is None else [b_weights])), returns

        batch, returns = batch_from(values)
        ev = explained_variance(values, returns)  # of the critic the update starts from
        params = list(self.net.parameters())  # once: walking the modules every minibatch costs ~20 us
        sizes = [len(mb) for mb in torch.arange(batch_size).tensor_split(num_minibatches)]

        stats: list[torch.Tensor] = []  # per minibatch: policy, value, entropy losses, kl, clip frac, grad norm
        for epoch in range(num_epochs):
            if epoch > 0 and recompute_adv:  # the critic has learnt since: fresher advantages
                with torch.no_grad():
                    batch, _ = batch_from(self.net.get_value(b_obs).numpy().reshape(rollout.values.shape))
            epoch_kls = []
            # Shuffle the whole batch once per epoch (one gather per tensor); minibatches are then views.
            perm = torch.randperm(batch_size, generator=self.generator)
            shuffled = [t[perm].split(sizes) for t in batch]
            for mb_obs, mb_actions, mb_logprobs, mb_values, mb_adv, mb_returns, *mb_weights in zip(*shuffled):
                if safe_point is not None:
                    safe_point(len(stats))
                cfg = self.config  # a live patch of a next_minibatch setting lands here
                lr = self.learning_rate(iteration, batch_size)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr

                _, newlogprob, entropy, newvalue = self.net.get_action_and_value(mb_obs, mb_actions)
                logratio = newlogprob - mb_logprobs
                ratio = logratio.exp()
                with torch.no_grad():
                    # Low-variance unbiased KL estimator, http://joschu.net/blog/kl-approx.html
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clip_frac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()

                if cfg.norm_adv and len(mb_adv) > 1:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)

                # Pessimistic (max of negatives) clipped surrogate.
                pg_losses = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
                pg_loss = (pg_losses * mb_weights[0] if mb_weights else pg_losses).mean()

                v_loss_unclipped = (newvalue - mb_returns) ** 2
                if cfg.clip_vloss:
                    v_clipped = mb_values + (newvalue - mb_values).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - mb_returns) ** 2).mean()
                else:
                    v_loss = 0.5 * v_loss_unclipped.mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss

                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()

                stats.append(torch.stack([pg_loss.detach(), v_loss.detach(), entropy_loss.detach(),
                                          approx_kl, clip_frac, grad_norm.detach()]))
                epoch_kls.append(approx_kl)

            # The epoch's mean KL: steadier than the last minibatch's alone.
            if cfg.target_kl is not None and torch.stack(epoch_kls).mean().item() > cfg.target_kl:
                break

        policy_loss, value_loss, entropy, approx_kl, clip_frac, grad_norm = torch.stack(stats).mean(0).tolist()
        return {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": approx_kl,
            "clip_frac": clip_frac,
            "explained_variance": ev,
            "lr": lr,
            "grad_norm": grad_norm,
            "epochs": float(epoch + 1),
            "lag_kl": lag_kl,
        }


def explained_variance(predictions: np.ndarray, targets: np.ndarray) -> float:
    """1 - Var[targets - predictions] / Var[targets]: 1 is perfect, <= 0 no better than a constant (nan if Var=0)."""
    var_targets = float(np.var(targets))
    if var_targets == 0.0:
        return float("nan")
    return float(1.0 - np.var(targets - predictions) / var_targets)


def _tensor(array: np.ndarray) -> torch.Tensor:
    # torch.tensor copies: rollout arrays may be read-only views of a received message buffer.
    return torch.tensor(array, dtype=torch.float32)
