"""Algorithm registry: name -> config model + lazily imported implementations.

The registry is torch-free on purpose: the config loader, the controller and
clients look algorithms up to validate configs, and should not pay for (or
need) torch. The torch-backed classes are named as ``"module:attr"`` strings
and imported with ``load_class`` only by the learner and the env-runners.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .ppo.config import PPOConfig

__all__ = ["AlgorithmSpec", "algorithm_names", "get_algorithm", "load_class", "register_algorithm"]


@dataclass(frozen=True)
class AlgorithmSpec:
    """Everything needed to find an algorithm's parts by name."""

    name: str
    config_cls: type[BaseModel]  # torch-free config model, validated by the config loader
    learner: str  # "module:attr" of the learner-side Algorithm class
    actor: str  # "module:attr" of the env-runner-side Actor class


_REGISTRY: dict[str, AlgorithmSpec] = {}


def register_algorithm(spec: AlgorithmSpec) -> None:
    """Add ``spec``; registering the identical spec again is a no-op (safe re-imports)."""
    for path in (spec.learner, spec.actor):
        if ":" not in path:
            raise ValueError(f"algorithm {spec.name!r}: {path!r} is not of the form 'module:attr'")
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"algorithm {spec.name!r} is already registered with a different spec: {existing}")
    _REGISTRY[spec.name] = spec


def get_algorithm(name: str) -> AlgorithmSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(algorithm_names())}") from None


def algorithm_names() -> list[str]:
    return sorted(_REGISTRY)


def load_class(path: str) -> Any:
    """Import ``"pkg.mod:Attr"`` (``Attr`` may be dotted) and return the object (of a type known to the caller)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} is not of the form 'module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{path!r}: {module_name} has no attribute {attr!r}") from None
    return obj


register_algorithm(
    AlgorithmSpec(
        name="ppo",
        config_cls=PPOConfig,
        learner="dynamicrl.core.algorithms.ppo.algorithm:PPOAlgorithm",
        actor="dynamicrl.core.algorithms.ppo.actor:PPOActor",
    )
)
