"""The decisions of a client's session, as values: what to answer a command or a request's outcome, what
a message over the rate costs, when an idle connection is closed, and how a close is counted and
announced. No socket and no event loop: :class:`gateway.session.Sessions` feeds in what happened and
carries out what comes back (a frame to send, a close, a rejection to count). What a ``client.connect``
or ``client.disconnect`` event says is :mod:`gateway.core.lifecycle_events`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.core.hub import JoinOutcome
from gateway.core.limits import Reason, Verdict
from shared import frames
from shared.close_codes import CloseCode
from shared.frames import ErrorCode, Ref

# Closes the connection layer (gateway/io/websocket.py) sends on its own when a client breaks a limit,
# counted as rejections.
LIMIT_CLOSES: dict[int, Reason] = {
    CloseCode.PROTOCOL_ERROR: Reason.PROTOCOL_ERROR,
    CloseCode.INVALID_DATA: Reason.INVALID_UTF8,
    CloseCode.MESSAGE_TOO_BIG: Reason.MESSAGE_TOO_BIG,
}
# A timer may fire a hair early: an idle connection this close to its timeout is closed.
IDLE_SLACK = 0.001
REGISTRY_UNAVAILABLE = "the presence registry is unavailable: not joined, try again later"


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``frame`` to the client. ``error``: the error code it carries (counted), None for an ``ok``
    or a reply. ``rejected``: a limit the client broke, counted as a rejection."""

    frame: bytes
    error: ErrorCode | None = None
    rejected: Reason | None = None


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection (after what is queued for it), counting ``rejected`` if it broke a limit."""

    code: int
    reason: str
    rejected: Reason | None = None


def ok(ref: Ref) -> Send:
    return Send(frames.ok(ref))


def error(ref: Ref, code: ErrorCode, message: str, rejected: Reason | None = None) -> Send:
    return Send(frames.error(ref, code, message), code, rejected)


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The settings the decisions depend on (from :class:`gateway.config.GatewayConfig`)."""

    max_rooms_per_conn: int
    max_inflight_requests: int
    request_timeout: float
    idle_timeout: float  # seconds; 0: off
    message_rate: float  # messages per second; for the words of the answers

    # -- commands ------------------------------------------------------------------------------------------
    @staticmethod
    def invalid(ref: Ref, code: ErrorCode, message: str) -> Send:
        """A frame that is not a valid command (:class:`shared.errors.FrameError`): its error frame, and
        a rejection if it was nested too deep (``invalid_frame``)."""
        rejected = Reason.JSON_DEPTH if code is ErrorCode.INVALID_FRAME else None
        return error(ref, code, message, rejected)

    @staticmethod
    def forbidden(ref: Ref, denied: str) -> Send:
        """A join or event the connection's token (or the authorization callout) does not allow."""
        return error(ref, ErrorCode.FORBIDDEN, denied)

    def join_answer(self, ref: Ref, outcome: JoinOutcome) -> Send:
        """A join carried out (or refused by the hub): ``ok``, or ``too_many_rooms``."""
        if outcome is JoinOutcome.TOO_MANY_ROOMS:
            limit = self.max_rooms_per_conn
            return error(ref, ErrorCode.TOO_MANY_ROOMS, f"at most {limit} rooms", Reason.TOO_MANY_ROOMS)
        return ok(ref)

    def join_unavailable(self, ref: Ref) -> Send:
        """A join whose room key could not be written (the join was undone)."""
        return error(ref, ErrorCode.UNAVAILABLE, REGISTRY_UNAVAILABLE)

    # -- requests ------------------------------------------------------------------------------------------
    def request_refused(self, inflight: int, ref: Ref) -> Send | None:
        """A request over ``max_inflight_requests`` awaiting replies is refused; None: it may go."""
        if inflight < self.max_inflight_requests:
            return None
        limit = self.max_inflight_requests
        return error(
            ref, ErrorCode.TOO_MANY_REQUESTS, f"at most {limit} requests at once", Reason.TOO_MANY_REQUESTS
        )

    def request_answer(self, ref: Ref, event: str, data: bytes | None, failed: ErrorCode | None) -> Send:
        """A NATS backend's reply to a request (``data``), or why there is none (``failed``)."""
        if failed is ErrorCode.TIMEOUT:
            return error(ref, failed, f"no reply to {event!r} in {self.request_timeout}s")
        if failed is ErrorCode.NO_RESPONDERS:
            return error(ref, failed, f"no backend handles {event!r}")
        return Send(frames.reply(ref, data or b""))

    @staticmethod
    def answered(ref: Ref, failed: tuple[ErrorCode, str] | None, body: bytes) -> Send:
        """An HTTP backend's answer to a request: the reply, or the client's error."""
        return Send(frames.reply(ref, body)) if failed is None else error(ref, *failed)

    @staticmethod
    def unreachable(ref: Ref, problem: object) -> Send:
        """A request that could not be sent (NATS is not connected)."""
        return error(ref, ErrorCode.BACKEND_UNAVAILABLE, f"cannot reach backends: {problem}")

    @staticmethod
    def not_sent(ref: Ref, problem: object) -> Send:
        """An event or message that could not be published (NATS is not connected)."""
        return error(ref, ErrorCode.BACKEND_UNAVAILABLE, f"message not sent: {problem}")

    # -- inbound limits --------------------------------------------------------------------------------
    def over_rate(self, verdict: Verdict, ref: Ref) -> Send | Close:
        """A message over the connection's rate: dropped with an error frame, or (sustained) a close."""
        rate = self.message_rate
        if verdict is Verdict.DROP:
            text = f"over {rate:g} messages per second: message dropped"
            return error(ref, ErrorCode.RATE_LIMITED, text, Reason.RATE_LIMITED)
        reason = f"message rate limit: over {rate:g} messages per second, again and again"
        return Close(CloseCode.POLICY_VIOLATION, reason, Reason.RATE_ABUSE)

    def idle(self, idle_for: float) -> Close | float:
        """The idle timer fired after ``idle_for`` seconds without a message: close the connection, or
        check again after the seconds returned."""
        timeout = self.idle_timeout
        if idle_for >= timeout - IDLE_SLACK:
            return Close(
                CloseCode.GOING_AWAY, f"idle timeout: no message for {timeout:g}s", Reason.IDLE_TIMEOUT
            )
        return timeout - idle_for


# -- closes ----------------------------------------------------------------------------------------------
def limit_broken(close_code: int) -> Reason | None:
    """The limit a client broke, if ``close_code`` is the connection layer's own answer to one (a frame too
    big, invalid UTF-8, a protocol error), counted where that close is made; any other close, None."""
    return LIMIT_CLOSES.get(close_code)
