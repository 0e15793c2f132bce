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

websockets and asyncio:

- no private name (``_x``) that websockets or asyncio define is read or written on any object but the
  product's own (``self``, or an object of the class that defines the name);
- a product class deriving from a websockets or asyncio class touches, of what that class has, only what
  its documentation lists (the lists below are copied from websockets' and asyncio's reference pages);
- no attribute of websockets' protocol and connection objects that their reference does not list (such as
  ``close_sent``, ``pending_pings``, ``send_data``) is used, nor anything imported from an undocumented
  module, nor ``vars()`` of another library's object.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import nats
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.server import ServerProtocol

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
        imported = _imports(tree)
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


# -- websockets and asyncio -----------------------------------------------------------------------------

# Underscore names that are documented public API.
DOCUMENTED_UNDERSCORE = {("os", "_exit")}

# What the reference documentation lists, per class the product derives from or holds.
DOCUMENTED: dict[type, set[str]] = {
    # https://docs.python.org/3/library/asyncio-protocol.html
    asyncio.BaseProtocol: {"connection_made", "connection_lost", "pause_writing", "resume_writing"},
    asyncio.Protocol: {"data_received", "eof_received"},
    # websockets: docs/reference/sansio/server.rst
    ServerProtocol: {
        "receive_data",
        "receive_eof",
        "accept",
        "select_subprotocol",
        "reject",
        "send_response",
        "send_continuation",
        "send_text",
        "send_binary",
        "send_close",
        "send_ping",
        "send_pong",
        "fail",
        "events_received",
        "data_to_send",
        "close_expected",
        "id",
        "logger",
        "state",
        "handshake_exc",
        "close_code",
        "close_reason",
        "close_exc",
    },
    # websockets: docs/reference/extensions.rst
    websockets.extensions.ServerExtensionFactory: {"name", "process_request_params"},
    websockets.extensions.Extension: {"name", "decode", "encode"},
    # websockets: docs/reference/asyncio/server.rst and client.rst
    ServerConnection: {
        "recv",
        "recv_streaming",
        "send",
        "close",
        "wait_closed",
        "ping",
        "pong",
        "respond",
        "id",
        "logger",
        "local_address",
        "remote_address",
        "latency",
        "state",
        "request",
        "response",
        "subprotocol",
        "close_code",
        "close_reason",
    },
    ClientConnection: {
        "recv",
        "recv_streaming",
        "send",
        "close",
        "wait_closed",
        "ping",
        "pong",
        "id",
        "logger",
        "local_address",
        "remote_address",
        "latency",
        "state",
        "request",
        "response",
        "subprotocol",
        "close_code",
        "close_reason",
    },
}
# Modules of websockets with a reference page (docs/reference/).
DOCUMENTED_MODULES = {
    "websockets",
    "websockets.asyncio.client",
    "websockets.asyncio.server",
    "websockets.client",
    "websockets.server",
    "websockets.protocol",
    "websockets.frames",
    "websockets.http11",
    "websockets.datastructures",
    "websockets.exceptions",
    "websockets.extensions",
    "websockets.extensions.permessage_deflate",
    "websockets.typing",
    "websockets.uri",
}

_DEFINED = re.compile(
    r"\b(?:self|cls)\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)"  # self._x = ...
    r"|\bdef\s+(_[A-Za-z]\w*)"  # def _x
    r"|^\s*(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)"  # _x = ... (module or class level)
    r"|[\"'](_[A-Za-z]\w*)[\"']",  # "_x" (slots, getattr)
    re.MULTILINE,
)
_ASSIGNED = re.compile(r"\bself\.([A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)")


@cache
def foreign_private_names() -> frozenset[str]:
    """The private names websockets and asyncio define, read from their sources."""
    names: set[str] = set()
    for package in (websockets, asyncio):
        for path in Path(inspect.getfile(package)).parent.rglob("*.py"):
            for match in _DEFINED.finditer(path.read_text(errors="replace")):
                names.update(group for group in match.groups() if group)
    return frozenset(name for name in names if not name.startswith("__"))


def foreign_attributes(cls: type) -> set[str]:
    """Everything an instance of ``cls`` has: its class's attributes and the instance attributes its
    websockets or asyncio classes assign (read from their sources)."""
    names = set(dir(cls))
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] in ("websockets", "asyncio"):
            names |= set(_ASSIGNED.findall(inspect.getsource(klass)))
    return {name for name in names if not name.startswith("__")}


def documented(cls: type) -> set[str]:
    found: set[str] = set()
    for klass in cls.__mro__:
        found |= DOCUMENTED.get(klass, set())
    return found


@cache
def undocumented_names() -> frozenset[str]:
    """Attributes of websockets' protocol and connection objects that no reference page lists and that
    neither the product defines for its own objects nor a common type (set, Transport, Logger...) has."""
    names: set[str] = set()
    for cls in (ServerProtocol, ServerConnection, ClientConnection):
        names |= foreign_attributes(cls) - documented(cls)
    everywhere = set().union(*DOCUMENTED.values())
    kinds: tuple[type, ...] = (set, dict, list, str, bytes, asyncio.Transport, asyncio.Server, logging.Logger)
    kinds += (
        asyncio.AbstractEventLoop,
        asyncio.StreamReader,
        asyncio.StreamWriter,
        asyncio.Future,
        asyncio.Event,
    )
    common = {name for kind in kinds for name in dir(kind)}
    own = {
        name
        for _, tree in product_files()
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef)
        for name in class_attributes(cls)
    }
    return frozenset(name for name in names - everywhere - common - own if not name.startswith("_"))


def test_no_private_name_of_websockets_or_asyncio_is_used_on_their_objects() -> None:
    private = foreign_private_names()
    problems: list[str] = []
    for use, value, parents in attribute_uses():
        if use.name not in private or _is_self(value) or (use.on, use.name) in DOCUMENTED_UNDERSCORE:
            continue
        owner = _enclosing_class(value, parents)
        if owner is not None and use.name in class_attributes(owner):
            continue  # a class of the product using its own name on another of its instances
        problems.append(str(use))
    assert not problems, "private names of websockets or asyncio used:\n" + "\n".join(problems)


def test_subclasses_of_websockets_and_asyncio_classes_touch_only_what_is_documented() -> None:
    problems: list[str] = []
    checked: list[str] = []
    for path, tree in product_files():
        imported = _imports(tree)
        for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
            for base in cls.bases:
                foreign = _resolve(ast.unparse(base), imported)
                if foreign is None:
                    continue
                assert documented(foreign), (
                    f"{path}: {cls.name} derives from {foreign}: list its documented API"
                )
                checked.append(f"{cls.name}({foreign.__name__})")
                theirs = foreign_attributes(foreign) - documented(foreign)
                for node in ast.walk(cls):
                    if isinstance(node, ast.Attribute) and _touches_self(node.value) and node.attr in theirs:
                        problems.append(
                            f"{path}:{node.lineno}: {cls.name} uses {foreign.__name__}.{node.attr}"
                        )
    assert "WsConnection(Protocol)" in checked  # the check sees the node's connection layer
    assert not problems, "undocumented members of a websockets or asyncio base class:\n" + "\n".join(problems)


def test_no_undocumented_attribute_of_websockets_objects_or_module_is_used() -> None:
    names = undocumented_names()
    problems = [str(use) for use, _, _ in attribute_uses() if use.name in names]
    for path, tree in product_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("websockets"):
                module = node.module or ""
                if module not in DOCUMENTED_MODULES:
                    problems.append(f"{path}:{node.lineno}: from {module} import ...")
                problems += [
                    f"{path}:{node.lineno}: {module}.{a.name}" for a in node.names if a.name.startswith("_")
                ]
            elif isinstance(node, ast.Import):
                problems += [
                    f"{path}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("websockets.") and a.name not in DOCUMENTED_MODULES
                ]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "vars"
                and not (node.args and ast.unparse(node.args[0]) in ("args", "self"))
            ):
                problems.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not problems, "undocumented websockets API used:\n" + "\n".join(problems)


def _touches_self(node: ast.AST) -> bool:
    if _is_self(node):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _imports(tree: ast.Module) -> dict[str, str]:
    """Names bound by the module's imports: local name -> dotted path."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # import a.b binds a; import a.b as c binds c to a.b
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _resolve(expression: str, imported: dict[str, str]) -> type | None:
    """The websockets or asyncio class a base-class expression names, if it names one."""
    head, _, rest = expression.partition(".")
    dotted = imported.get(head)
    if dotted is None:
        return None
    dotted = f"{dotted}.{rest}" if rest else dotted
    if dotted.split(".")[0] not in ("websockets", "asyncio"):
        return None
    module_name, _, name = dotted.rpartition(".")
    module = __import__(module_name, fromlist=[name])
    found = getattr(module, name)
    return found if isinstance(found, type) else None
