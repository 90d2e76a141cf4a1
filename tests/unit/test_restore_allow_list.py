"""No code is loaded from data: a config read from a reply or a checkpoint imports no plugin, and
restoring an env takes every name from an allow-list, never ``getattr`` on a checkpoint's string.

* ``config_from_dict`` leaves a named plugin unimported (no marker file, not in ``sys.modules``) and
  fails with PluginError naming it; with the plugin among those this process imported, it validates.
* ``load_config`` (this process's own file and command line) still imports its plugins.
* ``envstate.restore`` round-trips CartPole and Hopper exactly, and refuses, naming it, a bit
  generator, an env attribute or an MjData array outside its allow-list, changing nothing it names.
"""

from __future__ import annotations

import copy
import json
import sys

import gymnasium as gym
import pytest

from dynamicrl.core import envstate
from dynamicrl.core.settings import DEFAULT_CONFIG, PluginError, config_from_dict, load_config


@pytest.fixture
def marker_plugin(tmp_path, monkeypatch):
    """A module that, when imported, writes a marker file; on sys.path for this test only."""
    name = f"marker_plugin_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_config_from_data_imports_no_plugin_and_names_it(marker_plugin):
    name, marker = marker_plugin
    data = load_config(DEFAULT_CONFIG).to_dict() | {"plugins": [name]}
    with pytest.raises(PluginError) as raised:
        config_from_dict(data, origin="the reply")
    assert raised.value.missing == [name]
    assert str(raised.value) == (
        f"the reply: needs plugin(s) {name}, which this process did not import: "
        f"pass plugins=[{name}] in its config file or on its command line"
    )
    assert not marker.exists() and name not in sys.modules
    assert config_from_dict(data, imported=[name]).plugins == [name]  # passed by this process: accepted
    assert not marker.exists() and name not in sys.modules  # and still not imported by it


def test_odd_plugin_names_from_data_are_quoted_and_bounded():
    data = load_config(DEFAULT_CONFIG).to_dict() | {"plugins": ["os; rm -rf /" + "x" * 500, *map(str, range(9))]}
    with pytest.raises(PluginError) as raised:
        config_from_dict(data)
    message = str(raised.value)
    assert len(message) < 400 and "'os; rm -rf /xxx" in message and "...5 more" in message, message


def test_the_own_config_still_imports_its_plugins(marker_plugin):
    name, marker = marker_plugin
    assert load_config(DEFAULT_CONFIG, [f"plugins=[{name}]"]).plugins == [name]
    assert marker.read_text() == "imported"


def stepped(env: gym.Env, steps: int, seed: int = 3) -> None:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        if any(env.step(env.action_space.sample())[2:4]):
            break


def trajectory(env: gym.Env, steps: int) -> list[tuple]:
    env.action_space.seed(11)
    out = []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append((obs.tolist(), reward, terminated, truncated))
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Hopper-v5"])
def test_restore_round_trips_exactly(env_id):
    source, copy_ = gym.make(env_id), gym.make(env_id)
    try:
        stepped(source, 5)
        copy_.reset(seed=99)
        arrays, meta = envstate.capture(source)
        envstate.restore(copy_, arrays, json.loads(json.dumps(meta)))  # as read back from the part's JSON
        assert trajectory(copy_, 8) == trajectory(source, 8)
    finally:
        source.close()
        copy_.close()


def refused(env_id: str, change) -> tuple[str, gym.Env]:
    source, target = gym.make(env_id), gym.make(env_id)
    stepped(source, 5)
    target.reset(seed=99)
    arrays, meta = envstate.capture(source)
    meta = copy.deepcopy(meta)
    change(arrays, meta)
    with pytest.raises(ValueError) as raised:
        envstate.restore(target, arrays, meta)
    source.close()
    return str(raised.value), target


def test_a_bit_generator_outside_the_allow_list_is_refused():
    def seed_sequence(_arrays, meta):  # an attribute of np.random, but no bit generator
        meta["np_random"] = json.dumps({**json.loads(meta["np_random"]), "bit_generator": "SeedSequence"})

    message, target = refused("CartPole-v1", seed_sequence)
    assert message == "np_random: unknown bit generator 'SeedSequence'; known: PCG64, PCG64DXSM, MT19937, Philox, SFC64"
    target.close()


def test_an_env_attribute_outside_the_allow_list_is_refused():
    def dunder(_arrays, meta):
        meta["extra"] = {"__class__": "x"}

    message, target = refused("CartPole-v1", dunder)
    assert message.startswith("extra.__class__: not an env attribute a checkpoint restores"), message
    assert type(target.unwrapped).__name__ == "CartPoleEnv"
    target.close()

    def wrong_type(_arrays, meta):
        meta["extra"] = {"steps_beyond_terminated": "os.system"}

    message, target = refused("CartPole-v1", wrong_type)
    assert message.startswith("extra.steps_beyond_terminated: not an env attribute"), message
    target.close()


def test_an_mjdata_array_outside_the_env_is_refused():
    def model(_arrays, meta):  # an MjData attribute, but no array of it: a name taken from the file
        meta["mj_derived"] = [["model", "<f8", [1]], *meta["mj_derived"]]

    message, target = refused("Hopper-v5", model)
    assert message == "mj_derived: 'model' is not an MjData array of this env"
    target.close()

    def other_shape(_arrays, meta):
        name, dtype, shape = meta["mj_derived"][0]
        meta["mj_derived"][0] = [name, dtype, [shape[0] + 1, *shape[1:]]]

    message, target = refused("Hopper-v5", other_shape)
    assert message.startswith("mj_derived: ") and "this env's is" in message, message
    target.close()


def test_an_unknown_state_kind_is_refused():
    def kind(_arrays, meta):
        meta["kind"] = "builtins"

    message, target = refused("CartPole-v1", kind)
    assert message == "unknown env state kind 'builtins'; known: mujoco, classic"
    target.close()
