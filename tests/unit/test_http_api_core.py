"""The HTTP API's decisions without sockets: credentials (gateway/core/api_auth.py) and request bodies
(gateway/core/http_api.py)."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.core.api_auth import ApiAuthError, ApiCredentials
from gateway.core.auth import secret_key
from gateway.core.http_api import ApiRequestError, close_body, parse_batch, receipts_answer
from shared.subjects import Subjects

KEY = "k" * 40
SECRET = "j" * 32


def test_an_api_key_is_accepted_and_anything_else_is_not() -> None:
    credentials = ApiCredentials([KEY, "second-key-" + "x" * 30])
    assert credentials.check([f"Bearer {KEY}"]).name == "key #1"
    assert credentials.check([f"bearer  {'second-key-' + 'x' * 30}"]).name == "key #2"
    for header in ([], [f"Basic {KEY}"], ["Bearer "], [f"Bearer {KEY}x"], [f"Bearer {KEY}", f"Bearer {KEY}"]):
        with pytest.raises(ApiAuthError):
            credentials.check(header)


def test_a_jwt_for_the_api_audience_is_accepted_and_a_client_token_is_not() -> None:
    credentials = ApiCredentials([], jwt_audience="prism-api")
    keys = [secret_key(SECRET)]
    exp = int(time.time()) + 60
    api_token = jwt.encode({"sub": "deployer", "aud": "prism-api", "exp": exp}, SECRET, algorithm="HS256")
    assert credentials.check([f"Bearer {api_token}"], keys).name == "jwt sub=deployer"
    client_token = jwt.encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS256")
    with pytest.raises(ApiAuthError, match="aud"):
        credentials.check([f"Bearer {client_token}"], keys)
    expired = jwt.encode({"sub": "d", "aud": "prism-api", "exp": 1}, SECRET, algorithm="HS256")
    with pytest.raises(ApiAuthError, match="expired"):
        credentials.check([f"Bearer {expired}"], keys)
    with pytest.raises(ApiAuthError, match="invalid credentials"):
        ApiCredentials([KEY]).check([f"Bearer {api_token}"], keys)  # JWTs not accepted at all


def test_a_batch_is_parsed_whole_or_refused_whole() -> None:
    s = Subjects()
    batch = parse_batch(
        s,
        b'{"messages":[{"to":"user","id":"alice","data":"hi"},{"to":"broadcast","data_base64":"AAE="},'
        b'{"to":"conn","id":"node1.abc","data":"x"},{"to":"room","id":"lobby","data":"{}"}]}',
        1000,
    )
    assert [(p.subject, p.payload, p.binary) for p in batch] == [
        ("user.alice", b"hi", False),
        ("broadcast", b"\x00\x01", True),
        ("conn.node1.abc", b"x", False),
        ("room.lobby", b"{}", False),
    ]
    for bad, says in [
        (b"[]", "expected"),
        (b'{"messages":[]}', "expected"),
        (b'{"messages":[{"to":"planet","id":"x","data":"a"}]}', "to must be one of"),
        (b'{"messages":[{"to":"user","data":"a"}]}', r"messages\[0\].id"),
        (b'{"messages":[{"to":"user","id":"a b","data":"a"}]}', r"messages\[0\]: user id"),
        (b'{"messages":[{"to":"user","id":"a","data":"a","data_base64":"AA=="}]}', "not both"),
        (b'{"messages":[{"to":"user","id":"a","data_base64":"!!"}]}', "not base64"),
        (b'{"messages":[{"to":"user","id":"a","data":"' + b"x" * 11 + b'"}]}', "at most 10"),
    ]:
        with pytest.raises(ApiRequestError, match=says):
            parse_batch(s, bad, 10)


def test_close_bodies_and_receipts() -> None:
    assert close_body(b"") == {}
    assert close_body(b'{"code":4500,"reason":"bye","x":1}') == {"code": 4500, "reason": "bye"}
    with pytest.raises(ApiRequestError):
        close_body(b"[1]")
    receipts = [{"node": "a", "delivered": 2}, {"node": "b", "delivered": 1}]
    assert receipts_answer(receipts) == {"delivered": 3, "receipts": receipts}
