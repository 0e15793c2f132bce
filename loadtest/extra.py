"""The load-test tools need the ``loadtest`` extra (``pip install -e '.[loadtest]'``): a plain install of
Prism does not bring locust, picows, matplotlib or rich. Without it, every command of the kit says so
in one line instead of a traceback."""

from __future__ import annotations

INSTALL = "pip install -e '.[loadtest]'"
# Top-level modules of the extra's packages (and of what they bring: numpy with matplotlib, gevent with
# locust, websocket from websocket-client).
MODULES = frozenset({"rich", "picows", "matplotlib", "numpy", "locust", "gevent", "websocket"})


def needs_extra(exc: ModuleNotFoundError, command: str) -> str:
    """The line to print when ``command`` failed to import ``exc``'s module. Re-raises ``exc`` when that
    module is not one of the extra's: then the install is fine and the import is a bug to see."""
    module = (exc.name or "").partition(".")[0]
    if module not in MODULES:
        raise exc
    return f"{command} needs the loadtest extra (no module named {module!r}); install it with: {INSTALL}"
