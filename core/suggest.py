"""Did-you-mean for a mistyped name: one rule for config keys and patch names alike.

A mistyped name should get the fix in the same line that refuses it, whether it is a
config key (``env.num_envz``), a patch name (``ppo.lrr``) or the bare name a person
remembers (``lr`` for ``ppo.lr``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import BaseModel


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``'did you mean X?'`` for a mistyped ``name``, or ``''`` when no valid name is close.

    A valid dotted name that ends with ``name``'s last part is the answer (``lr`` ->
    ``ppo.lr``; ``env.seed`` -> ``run.seed``); several such names are all listed. Else the
    closest by difflib among the names as deep as ``name`` (``evn`` -> ``env``).
    """
    names = sorted(set(valid) - {name})
    last = name.rpartition(".")[2]
    found = [v for v in names if v.rpartition(".")[2] == last]
    if not found:
        depth = name.count(".")
        found = difflib.get_close_matches(name, [v for v in names if v.count(".") == depth], n=1)
    if not found:
        return ""
    return f"did you mean {found[0] if len(found) == 1 else ', '.join(found[:-1]) + ' or ' + found[-1]}?"


def field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted name in ``model``: its fields, and the fields of the models they hold (``env``, ``env.id``)."""
    names = []
    for field, info in model.model_fields.items():
        names.append(prefix + field)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names += field_names(info.annotation, f"{prefix}{field}.")
    return names
