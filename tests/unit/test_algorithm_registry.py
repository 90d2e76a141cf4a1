"""The algorithm registry: lookup, extension, errors, and staying torch-free."""

import subprocess
import sys

import pytest
from pydantic import BaseModel

from dynamicrl.core import algorithms as registry
from dynamicrl.core.algorithms import AlgorithmSpec, get_algorithm, load_class, register_algorithm
from dynamicrl.core.algorithms.base import Actor, Algorithm
from dynamicrl.core.algorithms.ppo.config import PPOConfig


class RandomConfig(BaseModel):
    name: str = "random"


class RandomAlgorithm(Algorithm):
    def __init__(self, config, observation_space, action_space, seed, num_iterations):
        self.config = config

    def update(self, rollout, iteration):
        return {}

    def get_weights(self):
        return {}


class RandomActor(Actor):
    def __init__(self, config, observation_space, action_space, seed):
        self.action_space = action_space

    def load_weights(self, weights):
        pass

    def act(self, obs):
        raise NotImplementedError

    def value(self, obs):
        raise NotImplementedError


RANDOM = AlgorithmSpec(
    name="random",
    config_cls=RandomConfig,
    learner=f"{__name__}:RandomAlgorithm",
    actor=f"{__name__}:RandomActor",
)


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch):
    """Let each test register freely without leaking into the others."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_ppo_is_built_in():
    spec = get_algorithm("ppo")
    assert spec.config_cls is PPOConfig
    assert "ppo" in registry.algorithm_names()


def test_ppo_classes_load():
    spec = get_algorithm("ppo")
    assert load_class(spec.learner).__name__ == "PPOAlgorithm"
    assert load_class(spec.actor).__name__ == "PPOActor"


def test_register_and_fetch_a_second_algorithm():
    register_algorithm(RANDOM)
    register_algorithm(RANDOM)  # the identical spec again is fine
    assert get_algorithm("random") is RANDOM
    assert registry.algorithm_names() == ["ppo", "random"]
    assert load_class(RANDOM.learner) is RandomAlgorithm
    assert load_class(RANDOM.actor) is RandomActor
    assert isinstance(RANDOM.config_cls(), RandomConfig)


def test_duplicate_name_with_a_different_spec_is_rejected():
    clash = AlgorithmSpec(name="ppo", config_cls=RandomConfig, learner=RANDOM.learner, actor=RANDOM.actor)
    with pytest.raises(ValueError, match="'ppo' is already registered"):
        register_algorithm(clash)
    assert get_algorithm("ppo").config_cls is PPOConfig


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown algorithm 'sac'; known: ppo"):
        get_algorithm("sac")


@pytest.mark.parametrize("path", ["no_colon_here", ":Attr", "json:"])
def test_load_class_rejects_malformed_paths(path):
    with pytest.raises(ValueError, match="module:attr"):
        load_class(path)


def test_load_class_reports_a_missing_attribute():
    with pytest.raises(ValueError, match="has no attribute"):
        load_class("json:NoSuchThing")


def test_malformed_spec_is_rejected():
    with pytest.raises(ValueError, match="module:attr"):
        register_algorithm(AlgorithmSpec("bad", RandomConfig, "no.colon", RANDOM.actor))


def test_importing_the_registry_does_not_import_torch():
    code = (
        "import sys\n"
        "from dynamicrl.core.algorithms import get_algorithm\n"
        "get_algorithm('ppo').config_cls()\n"
        "import dynamicrl.core.algorithms.base\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
