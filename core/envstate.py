"""Capture and restore a Gymnasium env exactly, for bitwise-reproducible resume.

What a trajectory depends on: the simulator state (for MuJoCo every array of
``MjData``, derived quantities included: rewards read positions computed in the
previous step), the env's ``np_random`` generator, and the TimeLimit counter
(without it an episode truncates at the wrong step). Classic-control envs keep
their state in ``unwrapped.state``. Anything else is refused with a clear error.

A checkpoint is data: restoring takes every name in it from an allow-list (the bit generators
below, the attributes ``capture`` saves, the live env's own MjData arrays), never ``getattr`` on
a string read from the file; a name outside it is a ValueError naming it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import gymnasium as gym
import numpy as np


class UnsupportedEnv(TypeError):
    """This env's simulator state cannot be captured; checkpoints are not possible with it."""


#: The bit generators an env's ``np_random`` may be restored with, by the name its state records.
BIT_GENERATORS: dict[str, type[np.random.BitGenerator]] = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "MT19937": np.random.MT19937,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
}
#: A classic-control env's attributes saved besides its ``state``: each name, and the types its value may have.
EXTRA_ATTRIBUTES: dict[str, tuple[type, ...]] = {"steps_beyond_terminated": (int, type(None))}


def capture(env: gym.Env) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    base: Any = env.unwrapped
    limit = _time_limit(env)
    # a JSON string: PCG64's state holds 128-bit integers, which msgpack cannot carry
    meta: dict[str, Any] = {
        "np_random": json.dumps(base.np_random.bit_generator.state),
        "elapsed_steps": limit._elapsed_steps if limit else None,
    }
    arrays: dict[str, np.ndarray] = {}
    meta["kind"], state = scene(env, exact=True)
    if meta["kind"] == "mujoco":
        arrays["mj_state"] = state
        # what env code reads before the next mj_step, packed into one buffer (one frame on the wire)
        arrays["mj_derived"], meta["mj_derived"] = _pack(
            {name: getattr(base.data, name) for name in _derived_arrays(base.data)}
        )
    else:
        arrays["state"] = state
        meta["extra"] = {k: getattr(base, k) for k in EXTRA_ATTRIBUTES if hasattr(base, k)}
    return arrays, meta


def scene(env: gym.Env, exact: bool = False) -> tuple[Literal["mujoco", "classic"], np.ndarray]:
    """The simulator's state, ``(kind, array)``, a copy: what a renderer needs to draw the present scene
    (``show``), not all a trajectory needs (``capture``). A subclass of a classic-control env is drawn
    from its ``state`` too, unless ``exact`` (a checkpoint cannot know what the subclass added).
    UnsupportedEnv for any other env."""
    base: Any = env.unwrapped
    classes = [type(base)] if exact else type(base).__mro__
    if hasattr(base, "data") and hasattr(base, "model"):  # MuJoCo
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(base.model, spec), np.float64)
        mujoco.mj_getState(base.model, base.data, state, spec)
        return "mujoco", state
    classic = any(c.__module__.startswith("gymnasium.envs.classic_control") for c in classes)
    if classic and getattr(base, "state", None) is not None:
        return "classic", np.array(base.state, dtype=np.float64)
    raise UnsupportedEnv(f"{env.spec.id if env.spec else type(base).__name__}: no known simulator state")


def show(env: gym.Env, kind: str, state: np.ndarray) -> None:
    """Put ``env`` in the scene ``scene`` read from an env of the same id (derived quantities recomputed)."""
    base: Any = env.unwrapped
    if kind == "mujoco":
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        if state.shape != (mujoco.mj_stateSize(base.model, spec),):
            raise ValueError(f"a MuJoCo state of shape {state.shape} does not fit this model")
        mujoco.mj_setState(base.model, base.data, state, spec)
        mujoco.mj_forward(base.model, base.data)
    elif kind == "classic":
        if getattr(base, "state", None) is not None and np.shape(base.state) != state.shape:
            raise ValueError(f"a state of shape {state.shape} does not fit this env")
        base.state = state if not isinstance(base.state, tuple) else tuple(state.tolist())
    else:
        raise ValueError(f"unknown scene kind {kind!r}")


def restore(env: gym.Env, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Put ``env`` back where ``capture`` found it; every name in ``arrays`` and ``meta`` from an allow-list
    (ValueError naming one that is not)."""
    base: Any = env.unwrapped  # the simulator's own attributes (MuJoCo's model and data, a classic env's state)
    if meta["kind"] not in ("mujoco", "classic"):
        raise ValueError(f"unknown env state kind {str(meta['kind'])[:80]!r}; known: mujoco, classic")
    state = json.loads(meta["np_random"])
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in BIT_GENERATORS:
        raise ValueError(f"np_random: unknown bit generator {str(name)[:80]!r}; known: {', '.join(BIT_GENERATORS)}")
    generator = np.random.Generator(BIT_GENERATORS[name]())
    generator.bit_generator.state = state
    base.np_random = generator
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = meta["elapsed_steps"]
    if meta["kind"] == "mujoco":
        show(env, "mujoco", arrays["mj_state"])
        live = {n: getattr(base.data, n) for n in _derived_arrays(base.data)}  # names from the env, not the file
        for n, value in _unpack(arrays["mj_derived"], meta["mj_derived"], live).items():
            live[n][...] = value
    else:
        state = arrays["state"]
        base.state = state if isinstance(base.state, np.ndarray) else tuple(state.tolist())
        for k, v in meta.get("extra", {}).items():
            if k not in EXTRA_ATTRIBUTES or not isinstance(v, EXTRA_ATTRIBUTES[k]):
                raise ValueError(f"extra.{str(k)[:80]}: not an env attribute a checkpoint restores (got {v!r:.80})")
            setattr(base, k, v)


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def _derived_arrays(data) -> list[str]:
    """MjData arrays sized by the model (not by the step's contacts/constraints).

    After a step they hold values computed before its last integration (body
    positions, contact forces...) that rewards read; recomputing them from the
    restored state would give slightly different numbers.
    """
    names = []
    for name in dir(data):
        if name.startswith(("_", "contact")) or "efc" in name or "island" in name:
            continue  # sized by this step's contacts and constraints; mj_forward rebuilds them
        try:
            value = getattr(data, name)
        except Exception:  # accessors that need arguments
            continue
        if isinstance(value, np.ndarray) and value.flags.writeable and value.size:
            names.append(name)
    return names


def _pack(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, list]:
    layout, chunks = [], []
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        layout.append([name, value.dtype.str, list(value.shape)])
        chunks.append(value.view(np.uint8).reshape(-1))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)), layout


def _unpack(buffer: np.ndarray, layout: list, live: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays ``_pack`` laid out, each one of ``live`` (by name) and of its dtype and shape: the layout is
    read from a checkpoint, so a name, dtype or shape is never taken from it, only checked against it."""
    out, offset = {}, 0
    for name, dtype, shape in layout:
        target = live.get(name) if isinstance(name, str) else None
        if target is None:
            raise ValueError(f"mj_derived: {str(name)[:80]!r} is not an MjData array of this env")
        if dtype != target.dtype.str or list(shape) != list(target.shape):
            raise ValueError(
                f"mj_derived: {name} is {str(dtype)[:20]} of shape {str(shape)[:40]}, "
                f"this env's is {target.dtype.str} of shape {list(target.shape)}"
            )
        size = target.nbytes
        if offset + size > buffer.size:
            raise ValueError(f"mj_derived: {name} lies past the end of the buffer ({buffer.size} bytes)")
        out[name] = buffer[offset : offset + size].view(target.dtype).reshape(target.shape)
        offset += size
    return out
