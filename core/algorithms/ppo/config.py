"""PPO hyperparameters, validated without importing torch.

The config loader (and a client that only wants to show or patch settings)
imports this module, so it must stay torch-free. Fields tagged
``json_schema_extra={"tunable": True, ...}`` may be patched while a run is
live; ``apply`` says when a patch takes effect: ``next_minibatch`` for values
the update loop reads before every gradient step, ``next_iteration`` for
values that shape a whole update (GAE, epoch/minibatch layout).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

_NEXT_MINIBATCH: JsonDict = {"tunable": True, "apply": "next_minibatch"}
_NEXT_ITERATION: JsonDict = {"tunable": True, "apply": "next_iteration"}


class PPOConfig(BaseModel):
    """Clipped-surrogate PPO (Schulman et al., 2017) as in CleanRL's ppo.py."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    name: Literal["ppo"] = "ppo"
    lr: float = Field(
        default=2.5e-4,
        gt=0,
        le=1,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Adam learning rate (before annealing).",
    )
    anneal_lr: bool = Field(
        default=True,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Decay the learning rate linearly to 0 (by anneal_env_steps); false: lr as it is.",
    )
    anneal_env_steps: int | None = Field(
        default=None,
        gt=0,
        json_schema_extra=_NEXT_MINIBATCH,
        description=(
            "Env steps by which the annealed learning rate reaches 0 (None: run.total_env_steps); "
            "past the run's end, the run ends part-way down."
        ),
    )
    num_steps: int = Field(
        default=128,
        ge=1,
        description="Rollout length per env per iteration.",
    )
    gamma: float = Field(
        default=0.99,
        ge=0,
        le=1,
        json_schema_extra=_NEXT_ITERATION,
        description="Discount factor.",
    )
    gae_lambda: float = Field(
        default=0.95,
        ge=0,
        le=1,
        json_schema_extra=_NEXT_ITERATION,
        description="GAE lambda: 0 is one-step TD, 1 is Monte-Carlo.",
    )
    update_epochs: int = Field(
        default=4,
        ge=1,
        le=1000,
        json_schema_extra=_NEXT_ITERATION,
        description="Passes over each rollout per update.",
    )
    num_minibatches: int = Field(
        default=4,
        ge=1,
        le=1_000_000,
        json_schema_extra=_NEXT_ITERATION,
        description="Minibatches per epoch; the rollout (num_steps x all envs) is split into this many.",
    )
    norm_adv: bool = Field(default=True, description="Normalise advantages per minibatch.")
    recompute_adv: bool = Field(
        default=False,
        description=(
            "Recompute values and GAE advantages with the current critic before every epoch after "
            "the first (Tianshou's recompute_advantage; Andrychowicz et al. 2021, 'What matters in "
            "on-policy RL'); false: once per update, as CleanRL."
        ),
    )
    clip_coef: float = Field(
        default=0.2,
        gt=0,
        le=10,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Surrogate clipping range epsilon (also used for the value clip).",
    )
    clip_vloss: bool = Field(default=True, description="Clip the value-function update like the policy.")
    ent_coef: float = Field(
        default=0.01,
        ge=0,
        le=1,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Entropy bonus weight.",
    )
    vf_coef: float = Field(
        default=0.5,
        ge=0,
        le=100,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Value-loss weight.",
    )
    max_grad_norm: float = Field(
        default=0.5,
        gt=0,
        le=1e6,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Global gradient-norm clip.",
    )
    target_kl: float | None = Field(
        default=None,
        gt=0,
        le=100,
        json_schema_extra=_NEXT_MINIBATCH,
        description="Stop the update's epochs early once the approximate KL exceeds this (None: never).",
    )
    decoupled: bool = Field(
        default=True,
        description=(
            "With a policy lag (run.mode overlap), clip the ratio against the policy at the "
            "update's start and weight each sample by that policy's ratio to the one that acted "
            "(decoupled PPO, Hilton et al. 2021); false: the plain ratio against the acting "
            "policy. No effect without a lag."
        ),
    )
    hidden_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64, 64],
        min_length=1,
        description="Hidden layer widths of both the actor and the critic MLP.",
    )
    activation: Literal["tanh", "relu"] = Field(default="tanh", description="Hidden-layer activation.")
    init_log_std: float = Field(
        default=0.0,
        ge=-5,
        le=2,
        description=(
            "Initial log-std of the Gaussian policy (Box actions only). 0 is CleanRL's std 1; "
            "Tianshou's MuJoCo scripts use -0.5 (std 0.61), which starts with a smaller control cost."
        ),
    )
