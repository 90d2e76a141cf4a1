"""Hyperparameters that may change while a run is live: declared once, as config fields.

A config field tagged ``json_schema_extra={"tunable": True, "apply": ...}`` is
tunable. Its public name is ``<namespace>.<field>``: the algorithm's name for
the ``algo`` section (``ppo.lr``), ``envrunner`` for the env-runner section,
``run`` for the run section (``run.total_env_steps``: a run trained longer or
shorter while it runs).
The same declaration drives validation of a patch, ``dynamicrl params`` and
the docs, and says who applies it and when:

- ``next_minibatch``: the learner, at its next safe point between gradient steps;
- ``next_iteration``: the learner, just before its next update;
- ``next_env_step``: every env-runner, before its next env step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import annotated_types
import yaml
from pydantic import ValidationError

from dynamicrl.core.settings import Config
from dynamicrl.core.suggest import did_you_mean
from dynamicrl.protocol.messages import Role, Tunable

APPLY_OWNER = {"next_minibatch": Role.LEARNER, "next_iteration": Role.LEARNER, "next_env_step": Role.ENVRUNNER}


class PatchError(ValueError):
    """A patch failed validation; nothing was changed. The message lists every problem; ``problems``
    has each by hyperparameter name, for a form to show beside its field."""

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}


@dataclass(frozen=True)
class Spec:
    name: str  # public name, e.g. "ppo.lr"
    section: str  # attribute of Config holding it, e.g. "algo"
    field: str  # field in that section, e.g. "lr"
    apply: str
    owner: Role


def _sections(config: Config) -> tuple[tuple[str, str], ...]:
    """(Config attribute, public namespace) of every section that may hold tunables."""
    return ("algo", config.algo.name), ("envrunner", "envrunner"), ("run", "run")


def specs(config: Config) -> dict[str, Spec]:
    """Every tunable of this run's config, by public name."""
    found = {}
    for section, namespace in _sections(config):
        model = type(getattr(config, section))
        for field, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("tunable"):
                name = f"{namespace}.{field}"
                found[name] = Spec(name, section, field, extra["apply"], APPLY_OWNER[extra["apply"]])
    return found


def describe(config: Config) -> list[Tunable]:
    """The ``params`` table: type, bounds, apply point, description and current value."""
    rows = []
    for spec in specs(config).values():
        section = getattr(config, spec.section)
        info = type(section).model_fields[spec.field]
        bounds = {"ge": None, "gt": None, "le": None, "lt": None}
        for meta in info.metadata:
            for key in bounds:
                if isinstance(meta, getattr(annotated_types, key.capitalize())):
                    bounds[key] = getattr(meta, key)
        rows.append(
            Tunable(
                name=spec.name,
                owner=spec.owner,
                type=_type_name(info.annotation),
                apply=spec.apply,
                description=info.description or "",
                value=getattr(section, spec.field),
                minimum=bounds["ge"] if bounds["ge"] is not None else bounds["gt"],
                exclusive_minimum=bounds["gt"] is not None,
                maximum=bounds["le"] if bounds["le"] is not None else bounds["lt"],
                exclusive_maximum=bounds["lt"] is not None,
            )
        )
    return rows


def allowed(row: Tunable) -> str:
    """e.g. 'float in (0, 1]' or 'float >= 0 or null'."""
    lo = "" if row.minimum is None else f"{'(' if row.exclusive_minimum else '['}{row.minimum:g}"
    hi = "" if row.maximum is None else f"{row.maximum:g}{')' if row.exclusive_maximum else ']'}"
    if lo and hi:
        return f"{row.type} in {lo}, {hi}"
    if lo:
        return f"{row.type} {'>' if row.exclusive_minimum else '>='} {row.minimum:g}"
    if hi:
        return f"{row.type} {'<' if row.exclusive_maximum else '<='} {row.maximum:g}"
    return row.type


def parse_value(text: str) -> Any:
    """A command-line value: JSON first (1e-4, true, null), then YAML, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def validate(config: Config, changes: dict[str, Any]) -> tuple[Config, dict[str, tuple[Any, Any]]]:
    """Check a whole patch; return the patched config and old -> new per name, or raise PatchError."""
    if not changes:
        raise PatchError("empty patch: give NAME=VALUE pairs (see `dynamicrl params`)")
    known = specs(config)
    rows = {row.name: row for row in describe(config)}
    problems: dict[str, str] = {}
    by_section: dict[str, dict[str, tuple[str, Any]]] = {}  # section -> field -> (name, value)
    for name, value in changes.items():
        spec = known.get(name)
        if spec is None:
            problems[name] = f"{name}={value!r}: {_unknown(config, name, known)}"
            continue
        annotation = type(getattr(config, spec.section)).model_fields[spec.field].annotation
        if isinstance(value, bool) and "bool" not in _type_name(annotation):  # pydantic would read true as 1
            problems[name] = f"{name}={value!r}: expected {_type_name(annotation)}, not true/false"
            continue
        by_section.setdefault(spec.section, {})[spec.field] = (name, value)
    patched = {}
    for section, fields in by_section.items():
        current = getattr(config, section)
        try:
            patched[section] = type(current).model_validate(
                {**current.model_dump(), **{field: value for field, (_, value) in fields.items()}}
            )
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                name, value = fields.get(field, (f"{section}.{field}", error.get("input")))
                hint = f"; allowed: {allowed(rows[name])}" if name in rows else ""
                said = f"{error['msg']}{hint}"
                problems[name] = f"{problems[name]}; {said}" if name in problems else f"{name}={value!r}: {said}"
    if problems:
        raise PatchError("patch rejected, nothing changed:\n  " + "\n  ".join(problems.values()), problems)
    new_config = config.model_copy(update=patched)
    diff = {}
    for name in changes:
        spec = known[name]
        diff[name] = (
            getattr(getattr(config, spec.section), spec.field),
            getattr(getattr(new_config, spec.section), spec.field),
        )
    return new_config, diff


def budget_problem(total_env_steps: int, iteration: int, env_step: int) -> str:
    """Why ``total_env_steps`` cannot be a run's new budget at this point ('' if it can)."""
    if total_env_steps <= env_step:
        return (
            f"the run is at {env_step} env steps (iteration {iteration}); "
            f"a new budget of {total_env_steps} env steps must be more"
        )
    return ""


def _unknown(config: Config, name: str, known: dict[str, Spec]) -> str:
    namespace, _, field = name.partition(".")
    for section, ns in _sections(config):
        if namespace == ns and field in type(getattr(config, section)).model_fields:
            return "exists but cannot change while the run is live (not tunable)"
    hint = did_you_mean(name, known)
    return f"unknown hyperparameter; {hint + ' ' if hint else ''}tunable: {', '.join(sorted(known))}"


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("NoneType", "null").replace(" | ", "|").replace("typing.", "")
