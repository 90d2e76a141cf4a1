"""What the dashboard reads from the run directory: metrics so far, checkpoints, clips, previews.

Read only, and only from the directory the controller names in its status: the dashboard keeps
no copy. A name coming from a URL is checked against what is listed, never joined blindly.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from dynamicrl.core import checkpoints

#: The curves' first draw: metrics.csv thinned evenly to at most this many rows (the last one kept).
MAX_ROWS = 5000
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEDIA = {".mp4": "video/mp4", ".gif": "image/gif", ".json": "application/json", ".png": "image/png"}


def metrics(run_dir: Path, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """``{"columns": [...], "rows": [[...]]}`` from metrics.csv, numbers parsed (blank: null)."""
    path = run_dir / "metrics.csv"
    try:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            columns = next(reader, [])
            rows = [[_number(v) for v in row] for row in reader if len(row) == len(columns)]
    except FileNotFoundError:
        return {"columns": [], "rows": []}
    if len(rows) > max_rows:
        step = len(rows) / max_rows
        rows = [rows[int(i * step)] for i in range(max_rows - 1)] + [rows[-1]]
    return {"columns": columns, "rows": rows}


def _number(text: str) -> float | int | str | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def checkpoint_list(run_dir: Path) -> list[dict[str, Any]]:
    """The run's complete checkpoints, newest first, with what the rotation will do with each."""
    found = []
    for path in checkpoints.complete(run_dir / "checkpoints"):
        try:
            manifest = json.loads((path / "manifest.json").read_text())
            controller = json.loads((path / "controller.json").read_text())
        except (OSError, ValueError):
            continue  # being written or damaged: `dynamicrl inspect` says which
        found.append(
            {
                "name": path.name,
                "path": str(path),
                "kind": manifest.get("kind"),
                "iteration": manifest.get("iteration"),
                "env_step": manifest.get("env_step"),
                "bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
                "retention": checkpoints.retention(path, manifest, controller),
            }
        )
    return found


def videos(run_dir: Path) -> dict[str, Any]:
    """The training clips, newest first, and each pause's previews, latest first."""
    clips = []
    folder = run_dir / "videos"
    for summary in sorted(folder.glob("iter-*.json"), key=_iteration, reverse=True) if folder.is_dir() else []:
        mp4 = summary.with_suffix(".mp4")
        if not mp4.is_file():
            continue
        try:
            about = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        gif = summary.with_suffix(".gif")
        clips.append(
            {
                "name": mp4.name,
                "url": f"/files/videos/{mp4.name}",
                "gif_url": f"/files/videos/{gif.name}" if gif.is_file() else None,
                **{k: about.get(k) for k in ("iteration", "env_step", "episode_return", "length", "seed")},
            }
        )
    pauses = []
    folder = run_dir / "previews"
    for pause in sorted(folder.glob("pause-*"), key=_iteration, reverse=True) if folder.is_dir() else []:
        number = _iteration(pause)
        images = [
            {"name": png.name, "url": f"/files/previews/{number}/{png.name}"} for png in sorted(pause.glob("*.png"))
        ]
        if images:
            pauses.append({"pause": number, "images": images})
    return {"videos": clips, "pauses": pauses}


def _iteration(path: Path) -> int:
    digits = path.name.split("-", 1)[-1].split(".", 1)[0]
    return int(digits) if digits.isdigit() else -1


def media_file(run_dir: Path, kind: str, *parts: str) -> Path | None:
    """A clip or preview named by a URL, if it is one: safe names, known suffixes, inside the run dir."""
    if not all(SAFE_NAME.match(part) for part in parts) or Path(parts[-1]).suffix not in MEDIA:
        return None
    if kind == "videos" and len(parts) == 1:
        path = run_dir / "videos" / parts[0]
    elif kind == "previews" and len(parts) == 2 and parts[0].isdigit():
        path = run_dir / "previews" / f"pause-{int(parts[0])}" / parts[1]
    else:
        return None
    return path if path.is_file() else None
