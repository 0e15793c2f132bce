"""Load a frozen dataclass of settings from ``PRISM_*`` environment variables and matching flags.

Each field ``foo_bar`` is read from ``--foo-bar`` if given, else ``PRISM_FOO_BAR``, else its default.
A field's ``metadata["help"]`` is its documentation (shown by ``--help`` and rendered into docs).
Types understood: str, int, float, bool, tuple[str, ...] (comma-separated).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, get_type_hints

from shared.errors import ConfigError

T = TypeVar("T")

ENV_PREFIX = "PRISM_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def setting(default: Any, help: str) -> Any:
    """A settings field with its documentation (``metadata["help"]``)."""
    return dataclasses.field(default=default, metadata={"help": help})


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _convert(kind: Any, name: str, raw: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        if kind is int:
            return _number(int, raw, "a whole number")
        if kind is float:
            return _number(float, raw, "a number")
        if kind == tuple[str, ...]:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def _number(kind: type[Any], raw: str, what: str) -> Any:
    try:
        return kind(raw)
    except ValueError:  # int()'s own message speaks Python ("invalid literal for int() with base 10")
        raise ValueError(f"not {what}") from None


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any], skip: Sequence[str] = ()) -> None:
    """Add one flag per field of ``cls`` (values stay strings; :func:`load` converts them)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        help_text = f"{f.metadata.get('help', '')} (env {env_name(f.name)}, default {f.default!r})"
        parser.add_argument(flag_name(f.name), dest=f.name, default=None, metavar="V", help=help_text)


def load(
    cls: type[T],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> T:
    """Build ``cls`` from overrides, then flags, then environment, then defaults; then validate it."""
    environ = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        from_flag = getattr(args, f.name, None) if args is not None else None
        if from_flag is not None:
            values[f.name] = _convert(hints[f.name], flag_name(f.name), from_flag)
        elif env_name(f.name) in environ:
            values[f.name] = _convert(hints[f.name], env_name(f.name), environ[env_name(f.name)])
    instance = cls(**values)
    check = getattr(instance, "validate", None)
    if check is not None:
        check()
    return instance


def describe(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(env var, flag, default, help) for every field: the source of the configuration docs."""
    return [
        (env_name(f.name), flag_name(f.name), repr(f.default), f.metadata.get("help", ""))
        for f in dataclasses.fields(cls)
    ]


def env_names(cls: type[Any]) -> frozenset[str]:
    """The ``PRISM_*`` variable of every field of ``cls``."""
    return frozenset(env_name(f.name) for f in dataclasses.fields(cls))


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """One warning per ``PRISM_*`` variable of ``environ`` that is not in ``known`` (a misspelling is
    otherwise silently ignored), naming the nearest known one when one is near."""
    known = frozenset(known)
    suffixes = {name.removeprefix(ENV_PREFIX): name for name in known}
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        # Compared without the shared prefix, which would make every name look alike.
        nearest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX).upper(), suffixes, n=1)
        hint = f"; did you mean {suffixes[nearest[0]]}?" if nearest else ""
        warnings.append(f"{name} is not a Prism setting and is ignored{hint}")
    return warnings
