"""Generalised Advantage Estimation (Schulman et al., 2016) over a time-major rollout."""

from __future__ import annotations

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    trunc_values: np.ndarray,
    last_values: np.ndarray,
    last_dones: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(advantages, returns)``, both float32 [T, N].

    ``dones[t]`` means the episode ended at step ``t`` (termination or
    truncation), so step ``t + 1`` starts a new episode: neither the TD target
    nor the advantage recursion bootstraps across it. A truncated episode did
    not really end, so its tail is bootstrapped instead through
    ``trunc_values[t]`` (the value of the final, pre-reset observation),
    folded into the reward as ``rewards[t] + gamma * trunc_values[t]``. After
    the last step, ``last_values`` (the value of ``last_obs``) is the
    bootstrap unless ``dones[-1]`` or ``last_dones`` says ``last_obs`` opens a
    new episode; the two flags agree under same-step autoreset, and either one
    suffices to stop the bootstrap.
    """
    num_steps = rewards.shape[0]
    rewards = rewards.astype(np.float32) + np.float32(gamma) * trunc_values.astype(np.float32)
    values = values.astype(np.float32)
    not_done = 1.0 - dones.astype(np.float32)
    not_done[-1] *= 1.0 - last_dones.astype(np.float32)

    advantages = np.zeros_like(values)
    next_values = last_values.astype(np.float32)
    next_advantage = np.zeros_like(next_values)
    for t in reversed(range(num_steps)):
        delta = rewards[t] + gamma * next_values * not_done[t] - values[t]
        next_advantage = delta + gamma * gae_lambda * not_done[t] * next_advantage
        advantages[t] = next_advantage
        next_values = values[t]
    returns = advantages + values
    return advantages.astype(np.float32, copy=False), returns.astype(np.float32, copy=False)
