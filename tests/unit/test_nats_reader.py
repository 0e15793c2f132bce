"""Prism's NATS reader hands the client exactly what nats-py's own parser would, however reads are split.

Both parsers run over the same bytes against an unconnected nats-py client whose protocol callbacks are
recorded; a direct subscription's handler and an ordinary subscription's queue must receive the same
messages in the same order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from gateway.io import direct_subscription, nats_reader
from gateway.io.nats_reader import DeliveryReader, parse_headers

DIRECT_SID = 7
ORDINARY_SID = 8


def _msg(subject: str, sid: int, payload: bytes, reply: str = "", header: bytes = b"") -> bytes:
    args = " ".join(a for a in (subject, str(sid), reply) if a)
    if header:
        return b"HMSG %s %d %d\r\n%s%s\r\n" % (
            args.encode(),
            len(header),
            len(header) + len(payload),
            header,
            payload,
        )
    return b"MSG %s %d\r\n%s\r\n" % (args.encode(), len(payload), payload)


STREAM = b"".join(
    [
        b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        _msg("conn.node1.a", DIRECT_SID, b"hello"),
        _msg("conn.node1.b", DIRECT_SID, b"abc", reply="_INBOX.r1"),
        b"PING\r\n",
        _msg(
            "conn.node1.c",
            DIRECT_SID,
            b"\x00\x01\x02\xff\xfe",
            header=b"NATS/1.0\r\nPrism-Frame: binary\r\n\r\n",
        ),
        _msg(
            "conn.node1.d", DIRECT_SID, b"", "_INBOX.r2", b"NATS/1.0\r\nPrism-Sent-At: 1.5\r\nA:  b \r\n\r\n"
        ),
        _msg("other.x", ORDINARY_SID, b"hi"),
        b"+OK\r\n",
        _msg("other.y", ORDINARY_SID, b"", "_INBOX.r3", b"NATS/1.0 503\r\n\r\n"),
        _msg("conn.node1.e", DIRECT_SID, b""),
        b"PONG\r\n",
        _msg("unknown.sid", 99, b"xyz"),
        _msg("conn.node1.f", DIRECT_SID, b"\r\n\r\n"),
        b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n",
    ]
)


class Recording(NatsClient):
    """An unconnected client that records the protocol operations handed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, Any]] = []

    async def _process_ping(self) -> None:
        self.ops.append(("ping", None))

    async def _process_pong(self) -> None:
        self.ops.append(("pong", None))

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        self.ops.append(("info", info))

    async def _process_err(self, err_msg: str) -> None:
        self.ops.append(("err", err_msg))


async def _feed(parser_type: type[Any], chunks: list[bytes]) -> tuple[list[Any], list[Any], Recording]:
    nc = Recording()
    direct: list[tuple[str, str, bytes, dict[str, str] | None]] = []

    def handler(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        direct.append((subject, reply, data, headers))

    nc._subs[DIRECT_SID] = direct_subscription.DirectSubscription(
        nc, DIRECT_SID, "conn.node1.*", direct_subscription.Dispatch(handler)
    )
    ordinary = Subscription(nc, ORDINARY_SID, "other.*", pending_msgs_limit=1000)
    nc._subs[ORDINARY_SID] = ordinary
    parser = parser_type(nc)
    for chunk in chunks:
        await parser.parse(chunk)
    queued = []
    while not ordinary._pending_queue.empty():
        msg = ordinary._pending_queue.get_nowait()
        queued.append((msg.subject, msg.reply, msg.data, msg.headers))
    return direct, queued, nc


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


async def test_same_as_nats_py_in_one_read() -> None:
    theirs = await _feed(Parser, [STREAM])
    ours = await _feed(DeliveryReader, [STREAM])
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]
    assert ours[2].ops == theirs[2].ops
    assert [m[0] for m in ours[0]] == [f"conn.node1.{c}" for c in "abcdef"]
    assert ours[0][2][3] == {"Prism-Frame": "binary"}
    assert ours[0][3][3] == {"Prism-Sent-At": "1.5", "A": "b"}
    assert ours[1][1][3] == {"Status": "503"}
    assert ours[2].stats == theirs[2].stats


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_same_as_nats_py_however_reads_are_split(cuts: list[int]) -> None:
    chunks = _split(STREAM, cuts)

    async def both() -> None:
        theirs = await _feed(Parser, [STREAM])
        ours = await _feed(DeliveryReader, chunks)
        assert ours[0] == theirs[0]
        assert ours[1] == theirs[1]
        assert ours[2].ops == theirs[2].ops

    asyncio.run(both())


async def test_a_byte_at_a_time() -> None:
    theirs = await _feed(Parser, [STREAM])
    ours = await _feed(DeliveryReader, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert ours[:2] == theirs[:2]


@pytest.mark.parametrize(
    "bad",
    [
        b"MSG conn.node1.a 7 x\r\nhello\r\n",
        b"MSG conn.node1.a\r\n",
        b"HMSG conn.node1.a 7 5\r\nhello\r\n",
        b"BOGUS\r\n",
        b"MSG conn.node1.a " + b"x" * 5000,
    ],
)
async def test_malformed_input_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        await _feed(DeliveryReader, [bad])


async def test_reset_drops_a_partial_operation() -> None:
    nc = Recording()
    reader = DeliveryReader(nc)
    await reader.parse(b"MSG conn.node1.a 7 5\r\nhel")
    reader.reset()
    await reader.parse(b"PING\r\n")
    assert nc.ops == [("ping", None)]


def test_header_parsing_matches_nats_py() -> None:
    blocks = [
        b"NATS/1.0\r\n\r\n",
        b"NATS/1.0\r\nA: 1\r\nB:2\r\nA: 3\r\n\r\n",
        b"NATS/1.0\r\nbad name: x\r\nno-colon\r\nok:\t v \r\n\r\n",
        b"NATS/1.0\r\nUtf: \xc3\xa9\xff\r\n\r\n",
    ]
    for block in blocks:
        expected = NatsClient._parse_header_lines(block[len(b"NATS/1.0\r\n") :]) or None
        assert parse_headers(block) == expected


def test_installed_only_into_a_client_it_knows() -> None:
    nc = NatsClient()
    assert nats_reader.install(nc)
    assert isinstance(nc._ps, DeliveryReader)
    del nc._subs
    other = NatsClient()
    other._subs = []  # type: ignore[assignment]
    assert not nats_reader.install(other)
    assert isinstance(other._ps, Parser)
