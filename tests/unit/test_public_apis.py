"""The product (gateway/, shared/, notification_service/, loadtest/) uses its libraries through their public,
documented APIs only: an upgrade of websockets, asyncio or nats-py must not be able to break it silently.

Read from the sources, without importing the product: every attribute access, ``getattr``-family string,
import and class of the product is checked.

nats-py:

- no private name (``_x``) that nats-py defines is read or written on any object but the product's own
  (``self``, or an object of the class that defines the name): not ``nc._transport``,
  ``nc._send_command``, ``nc._subs``, ``sub._received``, ``kv._js``...;
- nothing is imported from nats-py's protocol internals (``nats.protocol``: the parser and the command
  builders), except by the benchmark that measures nats-py's parser beside Prism's;
- no product class derives from a nats-py class.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nats

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "shared", "notification_service", "loadtest")
_GETATTR_FAMILY = {"getattr", "setattr", "hasattr", "delattr"}


@dataclass(frozen=True)
class Use:
    path: str
    line: int
    name: str
    on: str  # what the attribute was taken from, as written

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.on}.{self.name}"


@cache
def product_files() -> tuple[tuple[str, ast.Module], ...]:
    files = sorted(p for root in PRODUCT for p in (ROOT / root).rglob("*.py"))
    return tuple((str(p.relative_to(ROOT)), ast.parse(p.read_text(), str(p))) for p in files)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing_class(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.ClassDef | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.ClassDef):
            return node
    return None


def class_attributes(cls: ast.ClassDef) -> set[str]:
    """What a class of the product defines: methods, class attributes, slots, ``self.x = ...``."""
    names: set[str] = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(item.name)
        elif isinstance(item, ast.Assign):
            for target in item.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                    if target.id == "__slots__" and isinstance(item.value, ast.Tuple | ast.List):
                        names |= {
                            e.value
                            for e in item.value.elts
                            if isinstance(e, ast.Constant) and isinstance(e.value, str)
                        }
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
            names.add(node.attr)
    return names


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def attribute_uses(
    files: tuple[tuple[str, ast.Module], ...] | None = None,
) -> Iterator[tuple[Use, ast.AST, dict[ast.AST, ast.AST]]]:
    """Every ``x.name`` and ``getattr(x, "name")`` of the product (or of ``files``)."""
    for path, tree in product_files() if files is None else files:
        parents = _parents(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                yield Use(path, node.lineno, node.attr, ast.unparse(node.value)), node.value, parents
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in _GETATTR_FAMILY
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                yield (
                    Use(path, node.lineno, node.args[1].value, ast.unparse(node.args[0])),
                    node.args[0],
                    parents,
                )


# -- nats-py ---------------------------------------------------------------------------------------------

# The one product file allowed to import nats-py's protocol internals: it times nats-py's parser beside
# Prism's (python -m loadtest.hotpath); nothing of the gateway runs on them.
NATS_PROTOCOL_COMPARED = {"loadtest/hotpath.py"}
# nats-py's modules that are not its public API.
NATS_INTERNAL_MODULES = ("nats.protocol",)

_NATS_DEFINED = re.compile(
    r"\b(?:self|cls)\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)"  # self._x = ...
    r"|\bdef\s+(_[A-Za-z]\w*)"  # def _x
    r"|^\s*(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)"  # _x = ... (module or class level)
    r"|[\"'](_[A-Za-z]\w*)[\"']",  # "_x" (slots, getattr)
    re.MULTILINE,
)


@cache
def nats_private_names() -> frozenset[str]:
    """The private names nats-py defines (attributes, methods, module names), read from its sources."""
    names: set[str] = set()
    for path in Path(inspect.getfile(nats)).parent.rglob("*.py"):
        for match in _NATS_DEFINED.finditer(path.read_text(errors="replace")):
            names.update(group for group in match.groups() if group)
    return frozenset(name for name in names if not name.startswith("__"))


def nats_private_uses(files: tuple[tuple[str, ast.Module], ...]) -> list[str]:
    """Each use, in ``files``, of a name nats-py keeps private, on an object that is not the product's."""
    private = nats_private_names()
    problems: list[str] = []
    for use, value, parents in attribute_uses(files):
        if use.name not in private or _is_self(value):
            continue
        owner = _enclosing_class(value, parents)
        if owner is not None and use.name in class_attributes(owner):
            continue  # a class of the product using its own name on another of its instances
        problems.append(str(use))
    return problems


def nats_internal_imports(files: tuple[tuple[str, ast.Module], ...]) -> list[str]:
    problems: list[str] = []
    for path, tree in files:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.startswith(NATS_INTERNAL_MODULES) and path not in NATS_PROTOCOL_COMPARED:
                    problems.append(f"{path}:{node.lineno}: imports {module}")
    return problems


def test_no_private_name_of_nats_py_is_used_on_its_objects() -> None:
    problems = nats_private_uses(product_files())
    assert not problems, "private names of nats-py used:\n" + "\n".join(problems)


def test_nothing_is_imported_from_nats_py_s_protocol_internals() -> None:
    problems = nats_internal_imports(product_files())
    assert not problems, "nats-py internals imported:\n" + "\n".join(problems)


def test_no_product_class_derives_from_a_nats_py_class() -> None:
    problems: list[str] = []
    for path, tree in product_files():
        imported = _nats_imports(tree)
        for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
            for base in cls.bases:
                head = ast.unparse(base).partition(".")[0]
                if imported.get(head, "").startswith("nats"):
                    problems.append(f"{path}:{cls.lineno}: {cls.name}({ast.unparse(base)})")
    assert not problems, "product classes deriving from nats-py's:\n" + "\n".join(problems)


def test_the_nats_check_finds_what_it_is_for() -> None:
    """The checks above, on code that does what the gateway used to do, and on code that does not."""
    bad = ast.parse(
        "import nats.protocol.parser\n"
        "from nats.protocol import command\n"
        "class Reader:\n"
        "    def parse(self, nc, sub):\n"
        "        nc._ps = self\n"
        "        sub._received += 1\n"
        "        getattr(nc._transport, '_io_reader', None)\n"
        "        return nc._send_command(b'') or kv._js\n"
    )
    found = sorted(nats_private_uses((("bad.py", bad),)))
    assert found == sorted(
        [
            "bad.py:5: nc._ps",
            "bad.py:6: sub._received",
            "bad.py:7: nc._transport",
            "bad.py:7: nc._transport._io_reader",
            "bad.py:8: nc._send_command",
            "bad.py:8: kv._js",
        ]
    )
    assert len(nats_internal_imports((("bad.py", bad),))) == 2
    good = ast.parse(
        "class Link:\n"
        "    def __init__(self):\n"
        "        self._subs = {}\n"
        "        self._pongs = []\n"
        "    def other(self, link):\n"
        "        return link._subs, self._pongs\n"
    )
    assert nats_private_uses((("good.py", good),)) == []


def _nats_imports(tree: ast.Module) -> dict[str, str]:
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound
