"""Episode videos: a headless GL back-end, an env that renders ``rgb_array`` frames, an H.264 MP4 writer.

One module for every recorder (``dynamicrl evaluate --video``, the previewer's clips and pause
previews), so that they choose the GL back-end, make the env and encode the file the same way.
Frames in, file out: no torch, no policy here.

The encoder is imageio's ffmpeg plugin; the imageio-ffmpeg wheel ships the ffmpeg binary, so no
system ffmpeg is needed. MuJoCo renders offscreen through EGL (Mesa's or a GPU's libEGL), else
OSMesa (software, only if libOSMesa is installed); classic control draws its own frames (pygame,
a fixed size per env: ``size`` applies only to envs that take ``width``/``height``).
"""

from __future__ import annotations

import ctypes.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dynamicrl.core.envs import make_env
from dynamicrl.core.settings import EnvConfig

#: MuJoCo's offscreen back-ends, in the order tried, with the library each needs.
GL_BACKENDS = (("egl", "EGL"), ("osmesa", "OSMesa"))


class RenderError(ValueError):
    """An env that cannot render frames; the message names the env id and what is missing."""


@dataclass(frozen=True)
class Video:
    """What to record: the first ``episodes`` episodes into ``path``, frames of ``size`` (width, height)
    where the env takes a size, at ``fps`` (None: the env's ``render_fps``, else 30)."""

    path: Path
    episodes: int
    size: tuple[int, int]
    fps: float | None = None


def select_gl() -> str:
    """The GL back-end MuJoCo will use: ``$MUJOCO_GL`` if set, else the first of GL_BACKENDS whose
    library is installed, set in ``$MUJOCO_GL`` (mujoco reads it once, when imported, so this
    runs before an env is made; once mujoco is imported it changes nothing). "" if none is found."""
    chosen = os.environ.get("MUJOCO_GL", "")
    if not chosen and "mujoco" not in sys.modules:
        chosen = next((name for name, library in GL_BACKENDS if ctypes.util.find_library(library)), "")
        if chosen:
            os.environ["MUJOCO_GL"] = chosen
    return chosen


def make_render_env(config: EnvConfig, size: tuple[int, int], shadows: bool = True) -> gym.Env:
    """The env of ``config`` rendering ``rgb_array`` frames; RenderError if it has no such mode.

    ``shadows=False``: MuJoCo draws without shadows and reflections, about 6x faster in software GL
    (Mesa's llvmpipe: Ant-v5 at 320x240 in 12 ms a frame instead of 80); the physics is the same."""
    select_gl()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame (classic control) draws offscreen: no display
    try:
        entry_point = gym.spec(config.id).entry_point
    except gym.error.Error as exc:
        raise ValueError(f"env.id={config.id!r}: {exc}") from None
    try:  # a MuJoCo env's module loads its renderer, and so the GL library, when imported
        creator = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    except Exception as exc:
        raise _cannot_render(config.id, exc) from None
    modes = (getattr(creator, "metadata", None) or {}).get("render_modes") or []
    if "rgb_array" not in modes:
        raise RenderError(f"env {config.id!r} cannot be recorded: it has no 'rgb_array' render mode (it has {modes})")
    kwargs: dict[str, Any] = {"render_mode": "rgb_array"}
    parameters = inspect.signature(creator).parameters.values() if callable(creator) else ()
    if any(p.name == "width" or p.kind is p.VAR_KEYWORD for p in parameters):  # MuJoCo's envs take a frame size
        kwargs |= {"width": size[0], "height": size[1]}
    try:
        env = make_env(config.model_copy(update={"kwargs": {**config.kwargs, **kwargs}}))
    except ValueError:
        raise
    except Exception as exc:  # or makes a GL context when made
        raise _cannot_render(config.id, exc) from None
    model = getattr(env.unwrapped, "model", None)
    if not shadows and model is not None and hasattr(model, "light_castshadow"):  # visual fields only
        model.light_castshadow[:] = False
        model.mat_reflectance[:] = 0.0
    _follow_the_body(env)
    return env


def _follow_the_body(env: gym.Env) -> None:
    """A MuJoCo env filmed by Gymnasium's free camera loses a walker that walks away (Ant-v5 leaves the
    frame within seconds): track its root body instead (the env's ``trackbodyid``, else body 1), before
    the first frame makes the camera. ``camera_id`` None: -1 would set the camera back to free each frame."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is None or renderer.camera_id not in (None, -1):  # not MuJoCo, or a camera of the model's own
        return
    import mujoco

    renderer.default_cam_config = {
        "trackbodyid": 1,
        **(renderer.default_cam_config or {}),
        "type": mujoco.mjtCamera.mjCAMERA_TRACKING,
    }
    renderer.camera_id = None


def frame(env: gym.Env) -> np.ndarray:
    """The env's present scene as an (height, width, 3) uint8 array; RenderError if it cannot draw it."""
    renderer = getattr(env.unwrapped, "mujoco_renderer", None)
    if renderer is not None and renderer.viewer is not None:  # a process may draw several envs (the previewer)
        renderer.viewer.make_context_current()
    try:
        image = env.render()
    except Exception as exc:  # mujoco's FatalError, a GL context that cannot be made...
        raise _cannot_render(_env_id(env), exc) from None
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise RenderError(f"env {_env_id(env)!r} rendered no RGB frame but {type(image).__name__}")
    return image


def _env_id(env: gym.Env) -> str:
    return env.spec.id if env.spec else type(env.unwrapped).__name__


def _cannot_render(env_id: str, exc: Exception) -> RenderError:
    gl = os.environ.get("MUJOCO_GL") or "none found (no libEGL, no libOSMesa)"
    return RenderError(f"env {env_id!r} cannot render: {type(exc).__name__}: {exc} (GL back-end: MUJOCO_GL={gl})")


def write_png(path: Path, image: np.ndarray) -> Path:
    """``image`` as a PNG at ``path``, whole or not at all (written beside it, then renamed)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part.png")
    imageio.imwrite(part, image)
    return part.replace(path)


class Recorder:
    """The frames of an env's first ``video.episodes`` episodes, written to one MP4 (H.264, yuv420p).

    The file is opened at the first frame, so an env that cannot render leaves no file behind.
    ``gif``: also kept, smaller, for an animated GIF. ``frames`` and ``shape`` say what was written.
    """

    def __init__(self, env: gym.Env, video: Video, gif: Gif | None = None) -> None:
        self.env, self.video, self.gif = env, video, gif
        self.fps = video.fps or env.metadata.get("render_fps") or 30
        self.frames, self.shape = 0, (0, 0, 0)
        self._writer: Any = None

    def capture(self, episode: int) -> None:
        """Add the present frame if ``episode`` (0-based) is one of those recorded."""
        if episode >= self.video.episodes:
            return
        image = frame(self.env)
        if self._writer is None:
            import imageio.v2 as imageio

            self.video.path.parent.mkdir(parents=True, exist_ok=True)
            # macro_block_size=2: H.264 needs even sides; imageio's default (16) would resize most frames
            self._writer = imageio.get_writer(
                self.video.path, format="FFMPEG", fps=self.fps, codec="libx264", macro_block_size=2
            )
        self._writer.append_data(image)
        self.frames, self.shape = self.frames + 1, image.shape
        if self.gif is not None:
            self.gif.add(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Gif:
    """A small animated GIF of a clip: every ``stride``-th frame, subsampled to at most ``max_width``
    pixels wide. Small enough for a TensorBoard image summary (its image plugin animates GIFs; it has
    no MP4 player), and made from frames already in memory, so no reader decodes the MP4 again."""

    def __init__(self, fps: float, max_frames: int = 50, max_width: int = 160) -> None:
        self.fps, self.max_frames, self.max_width = fps, max_frames, max_width
        self.stride = 1  # doubled whenever more than 2 * max_frames are kept: the length need not be known
        self.images: list[np.ndarray] = []
        self._seen = 0

    def add(self, image: np.ndarray) -> None:
        if self._seen % self.stride == 0:
            step = max(1, -(-image.shape[1] // self.max_width))
            self.images.append(np.ascontiguousarray(image[::step, ::step]))
            if len(self.images) > 2 * self.max_frames:
                self.images, self.stride = self.images[::2], self.stride * 2
        self._seen += 1

    def encode(self) -> bytes:
        """The GIF's bytes (looping); ValueError if no frame was added."""
        import io

        from PIL import Image

        if not self.images:
            raise ValueError("no frames")
        first, *rest = (Image.fromarray(image) for image in self.images)
        out = io.BytesIO()
        first.save(
            out, format="GIF", save_all=True, append_images=rest, duration=round(1000 * self.stride / self.fps), loop=0
        )
        return out.getvalue()
