"""The root of every exception Prism raises on purpose.

PrismError
├── InvalidName        an id, room, event name or prefix that would change a subject's meaning
├── FrameError         a client frame Prism cannot accept (carries the error-frame code)
├── ConfigError        a setting that cannot be used
│   └── PortUnavailable  an address and port to listen on that cannot be used (in use, not permitted)
└── ClientError        raised by the Python client SDK
    ├── RequestFailed  the gateway answered a command or request with an error frame
    └── ConnectionLost the WebSocket closed (carries the close code)
        └── ConnectFailed  no connection could be opened (refused handshake, or the backoff gave up)
"""

from __future__ import annotations


class PrismError(Exception):
    """Base class of Prism's own exceptions."""


class InvalidName(PrismError, ValueError):
    """A name failed validation; the message says which rule it broke."""


class FrameError(PrismError):
    """A client frame was refused. ``code`` is the slug sent in the error frame."""

    def __init__(self, code: str, message: str, ref: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class ConfigError(PrismError):
    """A configuration value cannot be used."""


class PortUnavailable(ConfigError):
    """The process cannot listen where its settings say: the port is taken, privileged, or the address is
    not one of this host's. Raised before the process connects to anything, so it leaves no trace."""


class ClientError(PrismError):
    """Raised by :mod:`shared.client`."""


class RequestFailed(ClientError):
    """The gateway answered with an error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ClientError):
    """The WebSocket closed; ``code`` is its close code (or None if the TCP connection dropped)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed ({code}): {reason}")
        self.code = code
        self.reason = reason


class ConnectFailed(ConnectionLost):
    """A reconnecting client could not open a connection and stopped trying.

    Either the handshake was refused for good (``status`` holds the HTTP status, e.g. 400, 401, 403, 404;
    401 and 403 report ``code`` 4501 / 4503, the close codes with the same meaning), a node closed the new
    connection with a terminal close code, or the backoff policy's ``max_attempts`` ran out (``code`` is
    then the close code that started the outage). ``attempts`` counts the attempts made in a row; the
    last underlying error is the exception's ``__cause__``.
    """

    def __init__(self, code: int | None, reason: str, status: int | None = None, attempts: int = 0) -> None:
        super().__init__(code, reason)
        self.args = (f"could not connect (code {code}, after {attempts} attempt(s)): {reason}",)
        self.status = status
        self.attempts = attempts
