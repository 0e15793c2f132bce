"""What a token lets a client do: room and event name patterns from its claims, matched without regexes.

A pattern is a name in which ``*`` matches any run of characters inside one dot-separated part; an event
pattern may end with a part ``>`` that matches one or more parts. ``{user}`` stands for the client's own
(encoded) user id. So ``["lobby", "user-{user}", "chat-*"]`` and ``["chat.*", "profile.update", "game.>"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PATTERNS = 256
_PART_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_=-*")


def _glob(pieces: tuple[str, ...], text: str) -> bool:
    """Whether ``text`` matches the pattern ``"*".join(pieces)`` (``*``: any run of characters)."""
    if len(pieces) == 1:
        return text == pieces[0]
    first, last = pieces[0], pieces[-1]
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    at, end = len(first), len(text) - len(last)
    for piece in pieces[1:-1]:
        found = text.find(piece, at, end)
        if found < 0:
            return False
        at = found + len(piece)
    return True


@dataclass(frozen=True, slots=True)
class Pattern:
    """A room or event name pattern: ``*`` matches any run of characters inside one dot-separated part;
    for events, a last part ``>`` matches one or more parts (``>`` alone: every event)."""

    parts: tuple[tuple[str, ...], ...]  # each part split at '*'
    tail: bool  # ends with '>'

    @classmethod
    def parse(cls, text: str, dotted: bool) -> Pattern:
        """``text`` as a room pattern, or an event pattern if ``dotted``; :class:`ValueError` if invalid."""
        parts = text.split(".") if dotted else [text]
        tail = dotted and parts[-1] == ">"
        if tail:
            parts.pop()
        if not text or len(text) > 128 or not all(p and set(p) <= _PART_CHARS for p in parts):
            kind = "event" if dotted else "room"
            raise ValueError(
                f"{kind} pattern {text!r:.60} may hold only letters, digits, '_', '-', '=' and '*'"
                + (" in dot-separated parts, and a last part '>'" if dotted else "")
            )
        return cls(tuple(tuple(p.split("*")) for p in parts), tail)

    def matches(self, name: str, dotted: bool) -> bool:
        parts = name.split(".") if dotted else [name]
        if self.tail:
            if len(parts) <= len(self.parts):
                return False
            parts = parts[: len(self.parts)]
        elif len(parts) != len(self.parts):
            return False
        return all(_glob(p, n) for p, n in zip(self.parts, parts, strict=True))


@dataclass(frozen=True, slots=True)
class Grants:
    """Names granted exactly (a set lookup) plus wildcard patterns (tried in turn)."""

    exact: frozenset[str] = frozenset()
    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def parse(cls, claim: str, value: object, user: str, dotted: bool) -> Grants:
        """The grants of claim ``value`` (a list of patterns, or one space-separated string) for ``user``;
        :class:`ValueError` if it is malformed. An absent claim grants nothing."""
        if value is None:
            return cls()
        if isinstance(value, str):  # a space-separated list, as OAuth scopes
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"claim {claim!r} must be a list of strings")
        if len(value) > MAX_PATTERNS:
            raise ValueError(f"claim {claim!r} holds more than {MAX_PATTERNS} patterns")
        exact, patterns = set(), []
        for text in value:
            text = text.replace("{user}", user)
            try:
                pattern = Pattern.parse(text, dotted)
            except ValueError as exc:
                raise ValueError(f"claim {claim!r}: {exc}") from None
            if pattern.tail or any(len(p) > 1 for p in pattern.parts):
                patterns.append(pattern)
            else:
                exact.add(text)
        return cls(frozenset(exact), tuple(patterns))

    def allows(self, name: str, dotted: bool) -> bool:
        return name in self.exact or any(p.matches(name, dotted) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Permissions:
    """What a token lets its holder do by itself. Absent claims grant nothing."""

    rooms: Grants = field(default_factory=Grants)
    events: Grants = field(default_factory=Grants)

    def may_join(self, room: str) -> bool:
        return self.rooms.allows(room, dotted=False)

    def may_send(self, event: str) -> bool:
        return self.events.allows(event, dotted=True)
