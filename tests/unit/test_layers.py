"""Dependencies point one way: protocol <- core <- services, clients (see docs/architecture.md).

Every import in the tree is read with ``ast`` (function-level ones too), so a
lazy import that crosses a layer fails here as surely as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "__init__.py").is_file())


def imports(path: Path, text: str | None = None) -> set[str]:
    """Every ``dynamicrl.*`` module the file at ``path`` imports (or ``text``, as if it stood there)."""
    package = ["dynamicrl", *path.relative_to(REPO).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.startswith("dynamicrl.")}


def allowed_for(path: Path) -> tuple[str, ...]:
    """The module prefixes a file may import."""
    layer, *rest = path.relative_to(REPO).parts
    if layer == "protocol":
        return ("dynamicrl.protocol",)
    if layer == "core":
        return ("dynamicrl.protocol", "dynamicrl.core")
    if layer == "clients":  # a client starts services only through the launcher
        return ("dynamicrl.protocol", "dynamicrl.core", "dynamicrl.clients", "dynamicrl.services.launch")
    if rest[0] == "launch.py":  # the one module that knows every service
        return ("dynamicrl.protocol", "dynamicrl.core", "dynamicrl.services")
    own = (f"dynamicrl.services.{rest[0]}",) if rest[0] in SERVICES else ()
    return ("dynamicrl.protocol", "dynamicrl.core", "dynamicrl.services.base", "dynamicrl.services.launch", *own)


FILES = sorted(p for layer in ("protocol", "core", "services", "clients") for p in (REPO / layer).rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_one_way(path: Path) -> None:
    assert not crossings(path), (
        f"{path.relative_to(REPO)} imports {crossings(path)}; it may import only {allowed_for(path)}"
    )


def crossings(path: Path, text: str | None = None) -> list[str]:
    allowed = allowed_for(path)
    return sorted(m for m in imports(path, text) if not any(m == a or m.startswith(a + ".") for a in allowed))


def test_a_crossing_is_caught() -> None:
    """The rule is not vacuous: lazy, relative and absolute crossings all count."""
    learner = REPO / "services" / "learner" / "app.py"
    text = "def f():\n    from ..envrunner import app\nimport dynamicrl.services.controller.bus\nfrom . import buffer\n"
    assert crossings(learner, text) == [
        "dynamicrl.services.controller.bus",
        "dynamicrl.services.envrunner",
        "dynamicrl.services.envrunner.app",
    ]
    assert crossings(REPO / "core" / "envs.py", "from dynamicrl.services.base import Service\n")
    assert crossings(REPO / "protocol" / "codec.py", "from dynamicrl.core import settings\n")
