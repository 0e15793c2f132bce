"""The layout shows the architecture, and imports go one way (README.md, "Layout"):

- ``gateway/`` and ``notification_service/`` import ``shared/`` and never each other or ``loadtest/``;
- ``shared/`` imports none of them, except ``shared/cli/``: the ``prism`` command, which runs them all and
  imports each subcommand only when it runs;
- a package's ``__main__.py`` (``python -m gateway``) may hand over to the command.

Read from the source (every import statement, also those inside functions), and checked in a fresh
interpreter for what ``prism <command> --help`` actually loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("gateway", "notification_service", "loadtest", "shared", "grafana")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, by absolute name (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # ``from shared import cli``
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden(path: Path) -> tuple[str, ...]:
    """The packages the module at ``path`` must not import."""
    top = path.relative_to(REPO).parts[0]
    entry_point = path.name == "__main__.py"
    cli = () if entry_point else ("shared.cli",)
    if top == "gateway":
        return ("notification_service", "loadtest", *cli)
    if top == "notification_service":
        return ("gateway", "loadtest", *cli)
    if top == "shared" and not within(".".join(path.relative_to(REPO).parts[:2]), "shared.cli"):
        return ("gateway", "notification_service", "loadtest", *cli)
    return ()


def product_modules() -> list[Path]:
    return sorted(
        path
        for top in ("gateway", "notification_service", "shared")
        for path in (REPO / top).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_the_rules_see_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    assert forbidden(REPO / "gateway" / "node.py") == ("notification_service", "loadtest", "shared.cli")
    assert forbidden(REPO / "gateway" / "__main__.py") == ("notification_service", "loadtest")
    assert forbidden(REPO / "shared" / "cli" / "dev.py") == ()
    modules = imported_modules(REPO / "shared" / "cli" / "command.py")
    assert "loadtest.cli" in modules  # imported inside a function, only for prism loadtest
    assert "shared.cli.common" in modules


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_go_one_way(path: Path) -> None:
    rules = forbidden(path)
    broken = sorted(m for m in imported_modules(path) for p in rules if within(m, p))
    assert not broken, f"{path.relative_to(REPO)} imports {broken}"


def loaded_by(*argv: str) -> set[str]:
    """The Prism modules a fresh interpreter has loaded after ``prism ARGV`` (which must exit)."""
    script = (
        "import sys\n"
        "from shared.cli.command import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join('module ' + m for m in sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    modules = [line.removeprefix("module ") for line in out.splitlines() if line.startswith("module ")]
    return {m for m in modules if m.partition(".")[0] in TOP_LEVEL}


def test_prism_help_imports_no_subcommand() -> None:
    loaded = loaded_by("--help")
    assert not {m for m in loaded if not within(m, "shared")}, loaded
    assert "shared.cli.gateway" not in loaded


def test_prism_gateway_help_imports_neither_the_notification_service_nor_the_load_tests() -> None:
    loaded = loaded_by("gateway", "--help")
    assert "gateway.config" in loaded
    assert not {m for m in loaded if within(m, "notification_service") or within(m, "loadtest")}, loaded


def test_prism_notify_help_imports_neither_the_gateway_nor_the_load_tests() -> None:
    loaded = loaded_by("notify", "--help")
    assert "notification_service.config" in loaded
    assert not {m for m in loaded if within(m, "gateway") or within(m, "loadtest")}, loaded
