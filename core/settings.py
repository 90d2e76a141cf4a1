"""Run configuration: YAML files with includes, ``key=value`` overrides, strict validation.

A config file may ``include:`` other files (paths relative to it); included
files come first and the including file wins, key by key. Overrides come last.
Every key remembers the file (or override) it came from, so a wrong key or
value fails at start with one message naming the key and where it was set.
The ``algo`` section is validated by the config model of the algorithm it
names, taken from the algorithm registry (which imports no torch).
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from dynamicrl.core.algorithms import get_algorithm
from dynamicrl.core.suggest import did_you_mean, field_names
from dynamicrl.protocol.messages.base import INT64_MAX, INT64_MIN

DEFAULT_CONFIG = "configs/defaults.yaml"


class ConfigError(ValueError):
    """The configuration is wrong; the message names the key and the file. Fix and restart."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: ``tcp://host:port`` (a name, an IPv4 address, ``[IPv6]`` or ``*``; port 1-65535), ``ipc://path``, ``inproc://name``
_ENDPOINT = re.compile(
    r"tcp://(?P<host>\*|\[[0-9A-Fa-f:.%a-z]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?):(?P<port>[0-9]{1,5})"
    r"|ipc://[^\s]+|inproc://[^\s]+"
)


def endpoint_problem(endpoint: str) -> str:
    """Why ``endpoint`` is no address the sockets can use ('' if it is one)."""
    match = _ENDPOINT.fullmatch(endpoint)
    if match is None or (match["port"] is not None and not 1 <= int(match["port"]) <= 65535):
        return f"{endpoint!r} is not a ZeroMQ endpoint (tcp://host:port, ipc://path or inproc://name)"
    return ""


class Addresses(_Strict):
    """Endpoints; all on loopback by default. ``host`` and ``port`` place all four at once (ports
    port..port+3), and an address set by itself wins. ``:0`` is not allowed: peers must know them."""

    host: str = Field(default="127.0.0.1", min_length=1, description="host of every address not set by itself")
    port: int = Field(
        default=5550, ge=1, le=65532, description="first of four consecutive ports: controller, bus_in, bus_out, data"
    )
    controller: str = Field(default="", description="controller command socket (ROUTER); default tcp://host:port")
    bus_in: str = Field(default="", description="bus XSUB: publishers connect here; default tcp://host:port+1")
    bus_out: str = Field(default="", description="bus XPUB: subscribers connect here; default tcp://host:port+2")
    data: str = Field(
        default="", description="learner data socket (ROUTER): rollouts in, weights out; default tcp://host:port+3"
    )

    @field_validator("controller", "bus_in", "bus_out", "data")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value and (problem := endpoint_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if endpoint_problem(f"tcp://{f'[{value}]' if ':' in value else value}:1"):
            raise ValueError(f"{value!r} is not a host name, an IPv4 or an IPv6 address")
        return value

    @model_validator(mode="after")
    def _from_host_and_port(self) -> Addresses:
        host = f"[{self.host}]" if ":" in self.host else self.host
        for offset, key in enumerate(("controller", "bus_in", "bus_out", "data")):
            if not getattr(self, key):
                setattr(self, key, f"tcp://{host}:{self.port + offset}")
        return self


class RunConfig(_Strict):
    name: str = Field(default="dynamicrl", description="a label for the run; part of the run id")
    seed: int = Field(default=1, ge=0, description="base seed; env-runner r uses seed + 1000 * (r + 1)")
    dir: str | None = Field(default=None, description="run directory; default <root>/<run_id>")
    root: str = Field(default="runs", description="parent of run directories when dir is not set")
    total_env_steps: int = Field(
        default=150_000,
        ge=1,
        json_schema_extra={"tunable": True, "apply": "next_iteration"},
        description="training budget in env steps, all env-runners together (a live patch: more than the steps done)",
    )
    envrunners: int | Literal["auto"] = Field(
        default="auto",
        description="env-runners to wait for; 'auto' takes every one that registers within join_window_s of the first",
    )
    join_window_s: float = Field(
        default=3.0, gt=0, le=60, description="with envrunners=auto: how long the roster stays open"
    )
    torch_threads: int = Field(
        default=1, ge=1, le=64, description="torch threads per process (fixed for reproducibility)"
    )
    mode: Literal["sync", "overlap"] = Field(
        default="sync",
        description="sync: collect with the newest policy; overlap: collect iteration k+1 with policy k "
        "while the learner trains on k (one-iteration policy lag, still deterministic; a checkpoint waits for "
        "the next boundary)",
    )


class EnvConfig(_Strict):
    id: str = Field(default="CartPole-v1", description="Gymnasium environment id")
    num_envs: int = Field(default=8, ge=1, le=1024, description="environments per env-runner")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for gymnasium.make")


class NormalizeConfig(_Strict):
    """Observation and reward normalisation (the continuous-control recipe); statistics live in the learner."""

    obs: bool = Field(
        default=False, description="normalise observations by a running mean/std shared by all env-runners"
    )
    reward: bool = Field(default=False, description="scale rewards by the running std of the discounted return")
    clip_obs: float = Field(default=10.0, gt=0, description="clip normalised observations to +-this")
    clip_reward: float = Field(default=10.0, gt=0, description="clip scaled rewards to +-this")


class EnvRunnerConfig(_Strict):
    """Env-runner settings; the tunable ones may be patched live as ``envrunner.<name>``."""

    reward_scale: float = Field(
        default=1.0,
        gt=0,
        le=1e6,
        json_schema_extra={"tunable": True, "apply": "next_env_step"},
        description="Multiplies every reward the learner sees (episode returns are reported unscaled).",
    )


class TimingConfig(_Strict):
    heartbeat_s: float = Field(default=0.5, gt=0, le=10, description="heartbeat interval of every service")
    missing_after_s: float = Field(default=2.0, gt=0, description="a member silent this long is reported missing")
    dead_after_s: float = Field(
        default=15.0, gt=0, description="a learner or env-runner silent this long stops the run (exit 1)"
    )
    stall_after_s: float = Field(
        default=60.0,
        gt=0,
        description="running with no learner or env-runner advancing for this long (or 3x the longest gap "
        "seen so far, if more) is a stall: status says so and the controller logs it",
    )
    pause_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="a pause not reached by every service by then is called off"
    )
    patch_wait_s: float = Field(
        default=10.0, gt=0, le=600, description="how long `dynamicrl patch` waits for the patch to take effect"
    )
    start_timeout_s: float = Field(
        default=180.0, gt=0, description="the controller gives up if members are not ready by then"
    )
    signal_grace_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="a member of a running run that gets SIGTERM/SIGINT "
        "waits this long for the controller to stop it (after a last checkpoint)",
    )
    request_timeout_s: float = Field(
        default=1.0, gt=0, le=60, description="clients wait this long for each reply attempt"
    )
    monitor_expiry_s: float = Field(
        default=30.0,
        gt=0,
        description="the controller forgets (and `dynamicrl status` stops "
        "listing) an external monitor that has not reported for this long",
    )


class LoggerConfig(_Strict):
    console: bool = Field(default=True, description="print iteration lines, state changes and patches")
    every_s: float = Field(
        default=1.0, gt=0, description="at most one iteration line per this many seconds (the last always prints)"
    )
    csv: bool = Field(default=True, description="write metrics.csv in the run directory")
    tensorboard: bool = Field(default=True, description="write TensorBoard events in the run directory")
    required: bool = Field(default=True, description="the run waits for a logger before it starts")


class MetricsConfig(_Strict):
    return_window: int = Field(default=20, ge=1, description="return_mean is over the last N finished episodes")


class CheckpointConfig(_Strict):
    every_iterations: int | None = Field(
        default=None, ge=1, description="also checkpoint every N iterations (None: only on request and at the end)"
    )
    keep: int = Field(
        default=3, ge=1, description="periodic checkpoints kept (older periodic ones are deleted; the others never are)"
    )
    at_end: bool = Field(default=True, description="checkpoint when training finishes")
    timeout_s: float = Field(
        default=60.0, gt=0, description="a checkpoint not complete by then is abandoned (the run goes on)"
    )


def frame_size(value: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` as two even positive ints (H.264's 4:2:0 frames need even sides)."""
    width, _, height = value.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise ValueError(f"{value!r} is not WIDTHxHEIGHT, e.g. 480x360")
    if int(width) % 2 or int(height) % 2:
        raise ValueError(f"{value!r}: width and height must be even (H.264)")
    return int(width), int(height)


class VideoConfig(_Strict):
    """What the previewer service draws beside the run: episode clips (off unless a trigger is set)
    and a picture of every sub-env at each pause (on)."""

    every_iterations: int | None = Field(
        default=None, ge=1, description="record a clip every N iterations (None: not by iteration)"
    )
    at_checkpoints: bool = Field(default=False, description="also record a clip after each saved checkpoint")
    size: str = Field(default="320x240", description="frame WIDTHxHEIGHT (MuJoCo envs; classic control draws its own)")
    fps: float | None = Field(default=None, gt=0, description="frames per second (None: the env's render_fps)")
    max_steps: int = Field(default=1000, ge=1, description="a clip ends after this many env steps at most")
    shadows: bool = Field(
        default=False, description="clips with MuJoCo's shadows and reflections (6x the render time in software GL)"
    )
    nice: int = Field(default=10, ge=0, le=19, description="the previewer's CPU priority (training's is 0)")
    cpu_budget: float | None = Field(
        default=0.02,
        gt=0,
        le=1,
        description="while it films, the previewer's CPU at most this share of the machine's (None: no cap)",
    )
    pause_previews: bool = Field(
        default=True, description="at every pause, a PNG of each env-runner's sub-envs: runs/<id>/previews/pause-<n>/"
    )

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        frame_size(value)
        return value

    @property
    def enabled(self) -> bool:
        """Clips are recorded."""
        return self.every_iterations is not None or self.at_checkpoints

    @property
    def previewer(self) -> bool:
        """A previewer joins the run: it records clips, draws pause previews, or both."""
        return self.enabled or self.pause_previews


class SecurityConfig(_Strict):
    curve: bool = Field(
        default=True,
        description="CURVE-authenticated sockets (keys made on first use under keys); off is for debugging "
        "on loopback only and warns at every start",
    )
    keys: str = Field(
        default="~/.dynamicrl/keys",
        min_length=1,
        description="the directory (0700) of this user's CURVE keys: copy it to let another host's processes in",
    )


class Config(_Strict):
    run: RunConfig = Field(default_factory=RunConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    envrunner: EnvRunnerConfig = Field(default_factory=EnvRunnerConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    algo: Any = Field(
        default_factory=lambda: {"name": "ppo"},
        validate_default=True,
        description="algorithm name and its hyperparameters",
    )
    addresses: Addresses = Field(default_factory=Addresses)
    timing: TimingConfig = Field(default_factory=TimingConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    resume: str | None = Field(
        default=None,
        description="a run directory to continue from its latest good checkpoint "
        "(set by `dynamicrl resume-run` / $DYNAMICRL_RESUME)",
    )
    resume_total_env_steps: int | None = Field(
        default=None,
        gt=0,
        description="with resume: the run's new run.total_env_steps, to train it longer than it planned "
        "(set by `dynamicrl resume-run --total-env-steps`)",
    )
    patches: str | None = Field(
        default=None, description="a patches.jsonl to replay: its patches apply at the same logical times"
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="modules imported first (e.g. to register algorithms); only from a process's own config file "
        "and command line, never from a controller's reply or a checkpoint",
    )

    @field_validator("algo", mode="before")
    @classmethod
    def _algo(cls, value: Any) -> BaseModel:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping with a 'name' key")
        name = value.get("name", "ppo")
        return get_algorithm(name).config_cls.model_validate({**value, "name": name})

    @field_validator("resume_total_env_steps")
    @classmethod
    def _with_resume(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("resume"):
            raise ValueError(
                "only with resume (`dynamicrl resume-run RUN_DIR --total-env-steps N`); "
                "a new run's budget is run.total_env_steps"
            )
        return value

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, merge and validate a config; raise ConfigError naming key and file.

    The one place ``plugins`` are imported from a config: this process's own file and command line.
    """
    origins: dict[tuple[str, ...], str] = {}
    raw = _read(_resolve(path), origins, seen=())
    for item in overrides:
        _apply_override(raw, item, origins)
    plugins = raw.get("plugins")
    if isinstance(plugins, list):  # anything else: the validation below says what is wrong with it
        import_plugins([m for m in plugins if isinstance(m, str)], _origin(origins, ("plugins",)))
    return _validate(raw, origins)


def load_from_environment(path: str | Path, overrides: tuple[str, ...] = ()) -> Config:
    """Config file + ``$DYNAMICRL_OVERRIDES`` + ``overrides`` (these win), as every process loads it.

    ``$DYNAMICRL_RESUME`` (set by ``dynamicrl resume-run``) becomes ``resume=<dir>``;
    only the controller acts on it.
    """
    env_overrides = shlex.split(os.environ.get("DYNAMICRL_OVERRIDES", ""))
    if os.environ.get("DYNAMICRL_RESUME"):
        env_overrides.append(f"resume={os.environ['DYNAMICRL_RESUME']}")
    return load_config(path, [*env_overrides, *overrides])


class PluginError(ConfigError):
    """A config read from data (a controller's reply, a checkpoint) names plugins this process did not import.

    ``missing``: those plugins, as the data names them; the message says how to pass them.
    """

    def __init__(self, missing: list[str], message: str) -> None:
        super().__init__(message)
        self.missing = missing


def import_plugins(modules: Sequence[str], origin: str) -> None:
    """Import each of ``modules`` (named by this process's own config or command line, ``origin``)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{origin}: plugins: cannot import {module!r}: {exc}") from None


def missing_plugins(data: Any, imported: Sequence[str]) -> list[str]:
    """The plugins the config ``data`` (as read: anything) names that are not in ``imported`` (this process's)."""
    named = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(named, list):
        return []
    return list(dict.fromkeys(m for m in named if isinstance(m, str) and m not in imported))


def plugins_text(names: Sequence[str], limit: int = 5) -> str:
    """``names`` as a ``plugins=[...]`` value for a message (no spaces: one shell word), bounded and odd
    names quoted: they come from data."""
    more = [f"...{len(names) - limit} more"] if len(names) > limit else []
    return f"[{','.join([*map(plugin_name, names[:limit]), *more])}]"


def plugin_name(name: str) -> str:
    """``name`` as a message shows it: as is if it is a module name, else quoted and cut (it comes from data)."""
    return name if _MODULE_NAME.fullmatch(name) else repr(name[:80])


_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}(\.[A-Za-z_][A-Za-z0-9_]{0,99}){0,9}")


def config_from_dict(data: dict[str, Any], origin: str = "<controller>", imported: Sequence[str] = ()) -> Config:
    """Validate a config received from the controller or read from a checkpoint (already resolved).

    It imports nothing: such a config's ``plugins`` are data, never code to run. Each one it names
    must be among ``imported``, the plugins this process imported from its own config file and
    command line; else PluginError names the missing ones and says to pass them.
    """
    missing = missing_plugins(data, imported)
    if missing:
        wanted = plugins_text(missing)
        raise PluginError(
            missing,
            f"{origin}: needs plugin(s) {wanted[1:-1]}, which this process did not import: "
            f"pass plugins={wanted} in its config file or on its command line",
        )
    return _validate(data, {(): origin})


def _validate(raw: dict[str, Any], origins: dict[tuple[str, ...], str]) -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(str(p) for p in error["loc"] if not str(p).startswith("function-"))
            loc = tuple(p for p in loc if p not in ("int", "literal['auto']", "constrained-int"))
            if loc == ("algo",) and isinstance(error.get("input"), dict):  # unknown algorithm: blame the name
                loc = ("algo", "name")
            key = ".".join(loc) or "<root>"
            message = error["msg"].removeprefix("Value error, ")  # a validator's own words
            got = f" (got {error.get('input')!r})"
            value = "" if error["type"] == "missing" or got[6:-1] in message else got
            if error["type"] == "extra_forbidden" and (hint := did_you_mean(key, _key_names(raw))):
                value = f" ({hint})"
            lines.append(f"{_origin(origins, loc)}: {key}: {message}{value}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:  # e.g. unknown algorithm
        raise ConfigError(f"{_origin(origins, ('algo', 'name'))}: algo.name: {exc}") from None
    _no_bools_as_numbers(raw, config, (), origins)
    return config


def _no_bools_as_numbers(raw: Any, validated: Any, loc: tuple[str, ...], origins: dict) -> None:
    """Refuse true/false where a number is due (pydantic would read true as 1), naming the key."""
    if isinstance(raw, bool):
        if not isinstance(validated, bool):
            key = ".".join(loc)
            raise ConfigError(f"{_origin(origins, loc)}: {key}: expected a number, not true/false (got {raw!r})")
    elif isinstance(raw, dict) and isinstance(validated, BaseModel):
        for key, sub in raw.items():
            if isinstance(key, str) and key in type(validated).model_fields:
                _no_bools_as_numbers(sub, getattr(validated, key), (*loc, key), origins)


def _key_names(raw: dict[str, Any]) -> list[str]:
    """Every valid dotted key, the ``algo`` section's as the algorithm ``raw`` names has them."""
    algo = raw.get("algo")
    name = algo.get("name", "ppo") if isinstance(algo, dict) else "ppo"
    try:
        algo_names = field_names(get_algorithm(name).config_cls, "algo.")
    except ValueError:  # an unknown algorithm: its own error says so
        algo_names = []
    return [*field_names(Config), *algo_names]


def _origin(origins: dict[tuple[str, ...], str], loc: tuple[str, ...]) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in origins:
            return origins[loc[:n]]
    return "<defaults>"


def _resolve(path: str | Path) -> Path:
    """A path on disk, else the same path inside the installed ``dynamicrl.configs``."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    relative = candidate.parts[1:] if candidate.parts[:1] == ("configs",) else candidate.parts
    packaged = importlib.resources.files("dynamicrl.configs").joinpath(*relative)
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"config file not found: {path}")


def _read(path: Path, origins: dict[tuple[str, ...], str], seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: include cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for include in includes:
        _merge(merged, _read(path.parent / include, origins, seen + (path,)), (), origins, None)
    _merge(merged, data, (), origins, str(path))
    return merged


def _merge(dst: dict, src: dict, prefix: tuple[str, ...], origins: dict, origin: str | None) -> None:
    """Deep-merge ``src`` into ``dst``; record where each leaf came from (origin None keeps src's)."""
    for key, value in src.items():
        loc = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, loc, origins, origin)
        else:
            dst[key] = value
            if origin is not None:
                for known in [k for k in origins if k[: len(loc)] == loc]:
                    del origins[known]
                origins[loc] = origin
                if isinstance(value, dict):
                    _record(value, loc, origins, origin)


def _record(value: dict, prefix: tuple[str, ...], origins: dict, origin: str) -> None:
    for key, sub in value.items():
        origins[prefix + (str(key),)] = origin
        if isinstance(sub, dict):
            _record(sub, prefix + (str(key),), origins, origin)


def value_problem(value: Any) -> str:
    """Why a value given on a command line or in ``$DYNAMICRL_OVERRIDES`` cannot be used ('' if it can):
    text with undecodable bytes (a lone surrogate, as Python reads such bytes in argv), or an integer
    beyond int64, which no message can carry. Also ``value`` as the text it was parsed from."""
    if isinstance(value, str) and any("\ud800" <= c <= "\udfff" for c in value):
        return "not valid UTF-8 (undecodable bytes)"
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        return f"integer out of range (at most 19 digits: {INT64_MIN} to {INT64_MAX})"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, sub in items:
        if problem := value_problem(key) or value_problem(sub):
            return problem
    return ""


def _printable(text: str) -> str:
    """``text`` with its undecodable bytes shown as escapes, so that printing it cannot fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _apply_override(raw: dict[str, Any], item: str, origins: dict) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value (e.g. run.seed=3)")
    if problem := value_problem(item):  # before YAML, whose own message for it spans lines
        raise ConfigError(f"override {item!r}: {_printable(key.strip())}: {problem}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse the value: {exc}") from None
    if problem := value_problem(value):
        raise ConfigError(f"override {item!r}: {key.strip()}: {problem}")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1], start=1):
        if part not in node:  # a section this override creates is the override's, for error messages
            origins[tuple(parts[:depth])] = f"override {item!r}"
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value
    origins[tuple(parts)] = f"override {item!r}"


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
