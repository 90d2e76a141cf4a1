"""Did-you-mean: the one helper, and the config errors that use it (patches: e2e/test_controller_interactive.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamicrl.core.settings import Config, ConfigError, load_config
from dynamicrl.core.suggest import did_you_mean, field_names

DEFAULTS = Path(__file__).resolve().parents[2] / "configs" / "defaults.yaml"
TUNABLES = ["envrunner.reward_scale", "ppo.ent_coef", "ppo.lr", "run.total_env_steps"]


@pytest.mark.parametrize(
    "name, valid, expected",
    [
        ("ppo.lrr", TUNABLES, "did you mean ppo.lr?"),
        ("lr", TUNABLES, "did you mean ppo.lr?"),  # a bare name ending exactly one valid name
        ("lr", ["ppo.lr", "sac.lr", "ppo.gamma"], "did you mean ppo.lr or sac.lr?"),  # ending several
        ("lr", ["ppo.lr", "sac.lr", "td3.lr"], "did you mean ppo.lr, sac.lr or td3.lr?"),
        ("envrunner.lr", TUNABLES, "did you mean ppo.lr?"),  # the right name in the wrong section
        ("evn", ["env", "envrunner", "run"], "did you mean env?"),  # only names as deep as the typo
        ("ppo.batch", TUNABLES, ""),
        ("lrr", TUNABLES, ""),  # no bare name is that close, and no valid one as deep
        ("ppo.lr", ["ppo.lr"], ""),  # a valid name is not its own suggestion
    ],
)
def test_did_you_mean(name, valid, expected):
    assert did_you_mean(name, valid) == expected


def test_field_names_reach_into_nested_models():
    names = field_names(Config)
    assert {"env", "env.id", "env.num_envs", "run.seed", "timing.heartbeat_s", "algo"} <= set(names)
    assert "algo.lr" not in names  # algo is validated by its algorithm's own model, not Config's


def config_error(path: Path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


@pytest.mark.parametrize(
    "override, line",
    [
        (
            "env.num_envz=3",
            "override 'env.num_envz=3': env.num_envz: Extra inputs are not permitted (did you mean env.num_envs?)",
        ),
        ("evn.id=x", "override 'evn.id=x': evn: Extra inputs are not permitted (did you mean env?)"),
        ("lr=1e-4", "override 'lr=1e-4': lr: Extra inputs are not permitted (did you mean algo.lr?)"),
        ("algo.lrr=1", "override 'algo.lrr=1': algo.lrr: Extra inputs are not permitted (did you mean algo.lr?)"),
        ("env.seed=3", "override 'env.seed=3': env.seed: Extra inputs are not permitted (did you mean run.seed?)"),
        ("bogus=1", "override 'bogus=1': bogus: Extra inputs are not permitted (got 1)"),  # nothing close
    ],
)
def test_an_unknown_override_key_gets_the_closest_valid_one(override, line):
    lines = config_error(DEFAULTS, [override]).splitlines()
    assert lines[0] == "invalid configuration:" and len(lines) == 2, lines
    assert lines[1].strip() == line


def test_an_unknown_file_key_names_the_file_and_the_closest_valid_one(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("env:\n  num_envz: 3\nevn:\n  id: x\n")
    lines = [line.strip() for line in config_error(path, []).splitlines()[1:]]
    assert lines == [
        f"{path}: env.num_envz: Extra inputs are not permitted (did you mean env.num_envs?)",
        f"{path}: evn: Extra inputs are not permitted (did you mean env?)",
    ]


def test_algo_keys_are_suggested_from_the_named_algorithm(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("algo:\n  name: ppo\n  ent_cof: 0.01\n")
    assert f"{path}: algo.ent_cof: Extra inputs are not permitted (did you mean algo.ent_coef?)" in config_error(
        path, []
    )
