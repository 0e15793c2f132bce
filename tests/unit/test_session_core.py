"""The session core (gateway/core/session.py): what a session answers and when it closes, with no socket
and no event loop. The shell that carries these out is tested end to end in tests/integration."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core.hub import JoinOutcome
from gateway.core.lifecycle_events import disconnect_details, event_body
from gateway.core.limits import Reason, Verdict
from gateway.core.liveness import LostConn
from gateway.core.session import Close, Send, SessionRules, error, limit_broken, ok
from shared.close_codes import CloseCode
from shared.frames import ErrorCode

RULES = SessionRules(
    max_rooms_per_conn=2, max_inflight_requests=3, request_timeout=5.0, idle_timeout=30.0, message_rate=20.0
)


def frame_of(send: Send | Close) -> dict[str, Any]:
    assert isinstance(send, Send)
    frame = orjson.loads(send.frame)
    assert isinstance(frame, dict)
    return frame


def test_a_join_is_ok_unless_the_connection_is_in_too_many_rooms() -> None:
    joined = RULES.join_answer(7, JoinOutcome.JOINED)
    assert frame_of(joined) == {"prism": "ok", "ref": 7}
    assert (joined.error, joined.rejected) == (None, None)
    assert RULES.join_answer(7, JoinOutcome.ALREADY_MEMBER) == joined  # joining twice is no error
    refused = RULES.join_answer(8, JoinOutcome.TOO_MANY_ROOMS)
    expected = {"prism": "error", "ref": 8, "code": "too_many_rooms", "message": "at most 2 rooms"}
    assert frame_of(refused) == expected
    assert (refused.error, refused.rejected) == (ErrorCode.TOO_MANY_ROOMS, Reason.TOO_MANY_ROOMS)


def test_a_join_the_registry_could_not_store_says_try_again() -> None:
    answer = RULES.join_unavailable("j1")
    assert frame_of(answer)["code"] == "unavailable"
    assert answer.rejected is None  # the node's trouble, not the client's


@pytest.mark.parametrize(
    ("inflight", "refused"),
    [(0, False), (2, False), (3, True), (9, True)],
)
def test_requests_over_the_in_flight_limit_are_refused(inflight: int, refused: bool) -> None:
    answer = RULES.request_refused(inflight, 4)
    if not refused:
        assert answer is None
        return
    assert answer is not None
    assert frame_of(answer)["message"] == "at most 3 requests at once"
    assert answer.rejected is Reason.TOO_MANY_REQUESTS


def test_what_a_request_outcome_tells_the_client() -> None:
    reply = RULES.request_answer(1, "echo", b'{"a":1}', None)
    assert frame_of(reply) == {"prism": "reply", "ref": 1, "data": {"a": 1}}
    timeout = RULES.request_answer(2, "echo", None, ErrorCode.TIMEOUT)
    assert frame_of(timeout)["message"] == "no reply to 'echo' in 5.0s"
    assert timeout.error is ErrorCode.TIMEOUT
    nobody = RULES.request_answer(3, "echo", None, ErrorCode.NO_RESPONDERS)
    assert frame_of(nobody)["message"] == "no backend handles 'echo'"
    assert frame_of(RULES.answered(4, None, b"[1]"))["data"] == [1]
    failed = RULES.answered(5, (ErrorCode.BACKEND_ERROR, "HTTP 500"), b"")
    assert (frame_of(failed)["code"], frame_of(failed)["message"]) == ("backend_error", "HTTP 500")


def test_over_the_rate_a_message_is_dropped_and_sustained_it_closes() -> None:
    dropped = RULES.over_rate(Verdict.DROP, 3)
    assert frame_of(dropped)["message"] == "over 20 messages per second: message dropped"
    assert dropped.rejected is Reason.RATE_LIMITED
    closed = RULES.over_rate(Verdict.CLOSE, 3)
    assert closed == Close(
        CloseCode.POLICY_VIOLATION,
        "message rate limit: over 20 messages per second, again and again",
        Reason.RATE_ABUSE,
    )


def test_the_idle_timer_closes_at_the_timeout_and_otherwise_checks_again() -> None:
    assert RULES.idle(12.5) == 17.5
    closed = Close(CloseCode.GOING_AWAY, "idle timeout: no message for 30s", Reason.IDLE_TIMEOUT)
    assert RULES.idle(30.0) == closed
    assert RULES.idle(29.9995) == closed  # a timer may fire a hair early


def test_invalid_frames_and_forbidden_commands() -> None:
    too_deep = RULES.invalid(None, ErrorCode.INVALID_FRAME, "nested too deep")
    assert too_deep.rejected is Reason.JSON_DEPTH
    unknown = RULES.invalid(2, ErrorCode.UNKNOWN_COMMAND, "unknown command 'x'")
    assert (unknown.error, unknown.rejected) == (ErrorCode.UNKNOWN_COMMAND, None)
    assert frame_of(RULES.forbidden(1, "not allowed to join 'vip'"))["code"] == "forbidden"
    assert error(None, ErrorCode.RATE_LIMITED, "x").error is ErrorCode.RATE_LIMITED
    assert ok(None).error is None


def test_only_the_closes_made_for_a_broken_limit_count_as_one() -> None:
    assert limit_broken(CloseCode.MESSAGE_TOO_BIG) is Reason.MESSAGE_TOO_BIG
    assert limit_broken(CloseCode.INVALID_DATA) is Reason.INVALID_UTF8
    assert limit_broken(CloseCode.PROTOCOL_ERROR) is Reason.PROTOCOL_ERROR
    assert limit_broken(CloseCode.SERVICE_RESTART) is None
    assert limit_broken(CloseCode.NORMAL) is None


def test_a_disconnect_event_is_built_in_one_place_for_the_node_and_for_a_sweep() -> None:
    details = disconnect_details(4500, "bye", {"vip", "lobby"}, "2025-01-15T09:41:12.456Z")
    assert details == {
        "code": 4500,
        "reason": "bye",
        "rooms": ["lobby", "vip"],
        "disconnected_at": "2025-01-15T09:41:12.456Z",
    }
    lost = LostConn("node2.p0", "node2", "bob", "/ws", "198.51.100.4:40022", "t0", {"lobby"})
    swept = lost.disconnect_event("t1", swept_by="node1")
    own = event_body(lost.record, **disconnect_details(1006, "node lost", {"lobby"}, "t1"))
    assert swept == own | {"swept_by": "node1"}
    assert list(swept) == [*own, "swept_by"]
