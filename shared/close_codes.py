"""Every WebSocket close code Prism sends, with what a client should do about it.

Disconnects are values: the gateway closes with a member of :class:`CloseCode`, the SDKs decide whether
to reconnect from :attr:`CloseCode.reconnect`, and ``docs/protocol.md`` documents the same table (a unit
test keeps the two in step).
Prism's own codes live in 4000-4999: 4000-4499 mean "reconnect", 4500-4999 mean "do not reconnect".
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    # Prism, reconnect allowed (4000-4499)
    SLOW_CONSUMER = 4001
    BACKEND_RECONNECT = 4002
    # Prism, terminal (4500-4999)
    CLOSED_BY_BACKEND = 4500
    UNAUTHORIZED = 4501
    FORBIDDEN = 4503

    @property
    def reconnect(self) -> bool:
        """Whether a client should reconnect (with backoff) after this close."""
        return self in RECONNECT_CODES

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


RECONNECT_CODES = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.SLOW_CONSUMER,
        CloseCode.BACKEND_RECONNECT,
    }
)

MEANINGS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "closed normally (by the client, or by a backend with code 1000)",
    CloseCode.GOING_AWAY: "the node is shutting down",
    CloseCode.PROTOCOL_ERROR: "the client broke the WebSocket protocol",
    CloseCode.INVALID_DATA: "a text frame was not valid UTF-8",
    CloseCode.POLICY_VIOLATION: "the client broke a gateway policy (for example sustained abuse)",
    CloseCode.MESSAGE_TOO_BIG: "a client message exceeded the size limit",
    CloseCode.INTERNAL_ERROR: "the gateway hit an unexpected error",
    CloseCode.SERVICE_RESTART: "the node is draining: reconnect, the load balancer picks another node",
    CloseCode.TRY_AGAIN_LATER: "the node is overloaded or cannot reach NATS: reconnect later",
    CloseCode.SLOW_CONSUMER: "the client read too slowly and its outbound queue overflowed",
    CloseCode.BACKEND_RECONNECT: "a backend asked the client to reconnect",
    CloseCode.CLOSED_BY_BACKEND: "a backend closed the connection (kick); do not reconnect",
    CloseCode.UNAUTHORIZED: "authentication failed or the token expired; get a new token first",
    CloseCode.FORBIDDEN: "the client is not allowed to do what it tried",
}

# Codes a backend may ask for through the control subjects (others are the gateway's to use).
BACKEND_CLOSE_CODES = frozenset({1000, 1001, 1008, 1011, 1012, 1013}) | frozenset(range(4000, 5000))


def should_reconnect(code: int | None) -> bool:
    """Reconnect policy for any received code: unknown codes in 4000-4499 and abnormal closes reconnect."""
    if code is None or code == 1006:
        return True
    try:
        return CloseCode(code).reconnect
    except ValueError:
        return 4000 <= code < 4500
