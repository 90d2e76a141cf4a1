"""The wheel holds every package folder of the tree, the configs, the Procfiles and the dashboard's page:
nothing is listed by hand."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("protocol", "core", "services", "clients", "configs")


def test_the_wheel_contains_every_package_folder(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("dynamicrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = [p.parent.relative_to(REPO) for folder in FOLDERS for p in (REPO / folder).rglob("__init__.py")]
    assert len(packages) > 10
    missing = [str(p) for p in packages if f"dynamicrl/{p.as_posix()}/__init__.py" not in names]
    assert not missing, f"package folders missing from the wheel: {missing}"
    modules = [
        p.relative_to(REPO) for folder in FOLDERS for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts
    ]
    assert not [str(m) for m in modules if f"dynamicrl/{m.as_posix()}" not in names]
    configs = [p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")]
    assert configs and not [c for c in configs if f"dynamicrl/{c}" not in names]
    assert "dynamicrl/services/Procfile" in names  # the process set `dynamicrl run` starts
    assert "dynamicrl/services/Procfile.dashboard" in names  # and `dynamicrl run --dashboard` adds
    for page in ("index.html", "dashboard.js", "dashboard.css"):  # the dashboard's page, served offline
        assert f"dynamicrl/clients/dashboard/static/{page}" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "dynamicrl/tests"))]
