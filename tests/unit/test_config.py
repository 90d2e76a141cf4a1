"""Config loading: files, includes, precedence, overrides, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from dynamicrl.clients.cli import main as cli
from dynamicrl.core.settings import DEFAULT_CONFIG, Config, ConfigError, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def write(path: Path, data: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def config_error(path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return str(info.value)


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch):
    monkeypatch.delenv("DYNAMICRL_CONFIG", raising=False)
    monkeypatch.delenv("DYNAMICRL_OVERRIDES", raising=False)


# -- the shipped files -----------------------------------------------------------


def test_defaults_load():
    config = load_config(CONFIGS / "defaults.yaml")
    assert isinstance(config, Config)
    assert config.algo.name == "ppo"
    assert config.env.id == "CartPole-v1"
    assert config.run.name == "cartpole-ppo"
    assert config.addresses.controller == "tcp://127.0.0.1:5550"


SHIPPED = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))


def test_shipped_configs_are_found():
    assert "defaults.yaml" in SHIPPED and len(SHIPPED) >= 5, SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_validates(name):
    config = load_config(CONFIGS / name)
    # the resolved config survives the trip to the other services
    assert config_from_dict(config.to_dict()) == config


def test_shipped_experiment_includes_defaults_and_overrides_it():
    ant = load_config(CONFIGS / "env" / "mujoco_ant.yaml")
    assert ant.env.id == "Ant-v5"
    assert ant.algo.update_epochs == 10  # set by the including file
    assert ant.addresses.bus_out == "tcp://127.0.0.1:5552"  # from defaults.yaml
    assert ant.algo.clip_coef == 0.2  # from algo/ppo.yaml, two includes down


# -- includes and precedence -------------------------------------------------------


@pytest.fixture
def layered(tmp_path):
    write(tmp_path / "base" / "inner.yaml", {"run": {"seed": 5, "name": "inner", "total_env_steps": 1000}})
    write(tmp_path / "base" / "mid.yaml", {"include": ["inner.yaml"], "run": {"name": "mid", "join_window_s": 2.0}})
    return write(tmp_path / "top.yaml", {"include": "base/mid.yaml", "run": {"name": "top"}, "env": {"num_envs": 2}})


def test_including_file_wins_over_included(layered):
    config = load_config(layered)
    assert config.run.name == "top"  # top > mid > inner
    assert config.run.join_window_s == 2.0  # only in mid
    assert config.run.seed == 5  # only in inner
    assert config.run.total_env_steps == 1000
    assert config.env.num_envs == 2
    assert config.env.id == "CartPole-v1"  # model default: no file sets it


def test_overrides_win_over_every_file(layered):
    config = load_config(layered, ["run.seed=3", "run.name=cli", "env.num_envs=16"])
    assert (config.run.seed, config.run.name, config.env.num_envs) == (3, "cli", 16)
    assert config.run.join_window_s == 2.0


def test_later_override_wins():
    config = load_config(CONFIGS / "defaults.yaml", ["run.seed=3", "run.seed=4"])
    assert config.run.seed == 4


def test_a_wrong_value_fixed_by_a_later_layer_is_fine(tmp_path):
    write(tmp_path / "inc.yaml", {"run": {"seed": "not-a-number"}})
    top = write(tmp_path / "top.yaml", {"include": "inc.yaml", "run": {"seed": 9}})
    assert load_config(top).run.seed == 9
    bad = write(tmp_path / "bad.yaml", {"run": {"seed": "nope"}})
    assert load_config(bad, ["run.seed=10"]).run.seed == 10


def test_nested_section_merges_key_by_key(tmp_path):
    write(tmp_path / "inc.yaml", {"algo": {"name": "ppo", "lr": 0.001, "gamma": 0.9}})
    top = write(tmp_path / "top.yaml", {"include": ["inc.yaml"], "algo": {"lr": 0.002}})
    config = load_config(top)
    assert (config.algo.lr, config.algo.gamma) == (0.002, 0.9)


# -- override parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    "override, path, expected",
    [
        ("run.seed=3", ("run", "seed"), 3),
        ("env.kwargs={a: 1}", ("env", "kwargs"), {"a": 1}),
        ("env.kwargs={render_mode: null, frame_skip: 4}", ("env", "kwargs"), {"render_mode": None, "frame_skip": 4}),
        ("run.envrunners=2", ("run", "envrunners"), 2),
        ("run.envrunners=auto", ("run", "envrunners"), "auto"),
        ("run.dir=", ("run", "dir"), None),
        ("run.name=a=b", ("run", "name"), "a=b"),
        ("algo.lr=1e-3", ("algo", "lr"), 1e-3),
        ("algo.hidden_sizes=[32, 16]", ("algo", "hidden_sizes"), [32, 16]),
        ("logger.tensorboard=false", ("logger", "tensorboard"), False),
        ("timing.heartbeat_s=0.25", ("timing", "heartbeat_s"), 0.25),
    ],
)
def test_override_values_are_parsed_as_yaml(override, path, expected):
    value = load_config(CONFIGS / "defaults.yaml", [override])
    for part in path:
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


# -- errors name the key and where it was set ----------------------------------------


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", {"run": {"seed": 2, "sede": 3}})
    message = config_error(path)
    assert "run.sede" in message
    assert str(path.resolve()) in message


def test_unknown_top_level_section(tmp_path):
    path = write(tmp_path / "bad.yaml", {"runn": {"seed": 2}})
    message = config_error(path)
    assert "runn" in message and str(path.resolve()) in message


def test_wrong_type_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", {"env": {"num_envs": "eight"}})
    message = config_error(path)
    assert "env.num_envs" in message and "'eight'" in message
    assert str(path.resolve()) in message


def test_wrong_algo_hyperparameter_names_key_and_file(tmp_path):
    path = write(tmp_path / "bad.yaml", {"algo": {"name": "ppo", "lr": -1.0, "gama": 0.9}})
    message = config_error(path)
    assert "algo.lr" in message and "algo.gama" in message
    assert str(path.resolve()) in message


def test_error_in_an_included_file_names_that_file(tmp_path):
    inner = write(tmp_path / "parts" / "inner.yaml", {"timing": {"heartbeat_s": "often"}})
    top = write(tmp_path / "top.yaml", {"include": "parts/inner.yaml", "run": {"name": "x"}})
    message = config_error(top)
    assert "timing.heartbeat_s" in message
    assert str(inner.resolve()) in message
    assert str(top.resolve()) not in message


def test_error_in_the_including_file_names_it_not_the_include(tmp_path):
    inner = write(tmp_path / "inner.yaml", {"run": {"seed": 1}})
    top = write(tmp_path / "top.yaml", {"include": "inner.yaml", "run": {"seed": [1]}})
    message = config_error(top)
    assert "run.seed" in message and str(top.resolve()) in message
    assert str(inner.resolve()) not in message


def test_every_bad_key_is_reported(tmp_path):
    path = write(tmp_path / "bad.yaml", {"run": {"seed": -1}, "env": {"num_envs": 0}, "bogus": 1})
    message = config_error(path)
    for key in ("run.seed", "env.num_envs", "bogus"):
        assert key in message


@pytest.mark.parametrize(
    "override, names",
    [
        ("run.seed=abc", ["run.seed=abc", "run.seed"]),
        ("run.nope=1", ["run.nope=1", "run.nope"]),
        ("env.num_envs=0", ["env.num_envs=0", "env.num_envs"]),
        ("algo.lr=fast", ["algo.lr=fast", "algo.lr"]),
        ("noequals", ["noequals", "key=value"]),
        ("=3", ["=3"]),
        ("run.seed.deeper=1", ["run.seed.deeper=1"]),
        ("env.kwargs={a: [1", ["env.kwargs={a: [1", "cannot parse"]),
    ],
)
def test_bad_override_names_the_override(override, names):
    message = config_error(CONFIGS / "defaults.yaml", [override])
    assert "override" in message
    for name in names:
        assert name in message, (name, message)
    assert "defaults.yaml" not in message


def test_unknown_algorithm(tmp_path):
    path = write(tmp_path / "algo.yaml", {"algo": {"name": "dqn"}})
    message = config_error(path)
    assert "dqn" in message and "algo" in message and "ppo" in message  # names the known ones
    assert str(path.resolve()) in message
    message = config_error(CONFIGS / "defaults.yaml", ["algo.name=sac"])
    assert "sac" in message and "algo.name=sac" in message
    assert "ppo.yaml" not in message  # the override chose the name, not the file that set it first


def test_unimportable_plugin(tmp_path):
    path = write(tmp_path / "p.yaml", {"plugins": ["no_such_module_for_dynamicrl_tests"]})
    message = config_error(path)
    assert "plugins" in message and "no_such_module_for_dynamicrl_tests" in message
    assert str(path.resolve()) in message


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    message = config_error(missing)
    assert "not found" in message and str(missing) in message


def test_missing_include_names_it(tmp_path):
    top = write(tmp_path / "top.yaml", {"include": "gone.yaml"})
    message = config_error(top)
    assert "gone.yaml" in message


def test_include_cycle(tmp_path):
    write(tmp_path / "a.yaml", {"include": "b.yaml", "run": {"seed": 1}})
    write(tmp_path / "b.yaml", {"include": "c.yaml"})
    write(tmp_path / "c.yaml", {"include": "a.yaml"})
    assert "include cycle" in config_error(tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", {"include": "self.yaml"})
    assert "include cycle" in config_error(tmp_path / "self.yaml")


def test_diamond_include_is_not_a_cycle(tmp_path):
    write(tmp_path / "common.yaml", {"run": {"seed": 7}})
    write(tmp_path / "left.yaml", {"include": "common.yaml"})
    write(tmp_path / "right.yaml", {"include": "common.yaml"})
    top = write(tmp_path / "top.yaml", {"include": ["left.yaml", "right.yaml"]})
    assert load_config(top).run.seed == 7


@pytest.mark.parametrize(
    "text, problem",
    [
        ("run: [unclosed\n", "cannot read yaml"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_malformed_file(tmp_path, text, problem):
    path = write(tmp_path / "bad.yaml", text)
    message = config_error(path)
    assert problem in message.lower() and str(path.resolve()) in message


def test_empty_file_gives_the_model_defaults(tmp_path):
    config = load_config(write(tmp_path / "empty.yaml", ""))
    assert config == Config()
    # no algo section: still the algorithm's validated config, not a bare dict
    assert config.algo.name == "ppo" and config.algo.lr == 2.5e-4
    assert Config().algo.num_steps == 128


# -- the packaged fallback --------------------------------------------------------


def test_packaged_fallback_when_cwd_is_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "configs").exists()
    expected = load_config(CONFIGS / "defaults.yaml")
    assert load_config("configs/defaults.yaml") == expected
    assert load_config() == expected
    assert DEFAULT_CONFIG == "configs/defaults.yaml"
    assert load_config("configs/run/local_debug.yaml").run.name == "debug"
    assert load_config("env/mujoco_ant.yaml").env.id == "Ant-v5"


def test_a_file_on_disk_wins_over_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "configs" / "defaults.yaml", {"run": {"name": "local-copy"}})
    assert load_config("configs/defaults.yaml").run.name == "local-copy"


def test_missing_file_is_not_found_in_the_package_either(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "not found" in config_error("configs/no_such_config.yaml")


# -- the CLI ----------------------------------------------------------------------


def test_cli_reports_a_config_error(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"include": str(CONFIGS / "defaults.yaml"), "run": {"sede": 3}})
    result = CliRunner().invoke(cli, ["status", "--config", str(bad)])
    assert result.exit_code != 0
    assert not isinstance(result.exception, (ConfigError, AttributeError, TypeError)), result.exception
    assert "run.sede" in result.output
    assert str(bad.resolve()) in result.output
    assert "Traceback" not in result.output


def test_cli_reports_a_bad_override():
    result = CliRunner().invoke(cli, ["status", "run.seed=abc"])
    assert result.exit_code != 0
    assert "run.seed=abc" in result.output and "Traceback" not in result.output


def test_cli_reports_a_bad_override_from_the_environment(monkeypatch):
    monkeypatch.setenv("DYNAMICRL_OVERRIDES", "env.num_envs=-4")
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code != 0
    assert "env.num_envs" in result.output


def test_a_new_budget_without_resume_is_an_error():
    message = config_error(CONFIGS / "defaults.yaml", ["resume_total_env_steps=5000"])
    assert "resume_total_env_steps" in message and "only with resume" in message and "5000" in message
    assert (
        load_config(CONFIGS / "defaults.yaml", ["resume=runs/x", "resume_total_env_steps=5000"]).resume_total_env_steps
        == 5000
    )


def test_addresses_host_and_port_place_all_four_and_an_address_set_by_itself_wins():
    config = load_config(overrides=["addresses.port=6000", "addresses.host=10.0.0.2"])
    assert (config.addresses.controller, config.addresses.bus_in, config.addresses.bus_out, config.addresses.data) == (
        "tcp://10.0.0.2:6000",
        "tcp://10.0.0.2:6001",
        "tcp://10.0.0.2:6002",
        "tcp://10.0.0.2:6003",
    )
    mixed = load_config(overrides=["addresses.port=6000", "addresses.bus_out=tcp://127.0.0.1:7000"])
    assert mixed.addresses.bus_out == "tcp://127.0.0.1:7000" and mixed.addresses.data == "tcp://127.0.0.1:6003"
    assert load_config().addresses.controller == "tcp://127.0.0.1:5550"
    with pytest.raises(ConfigError, match=r"addresses\.port"):
        load_config(overrides=["addresses.port=65534"])  # its four ports must exist
