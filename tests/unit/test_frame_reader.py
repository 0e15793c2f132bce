"""gateway.core.frame_reader against websockets: the same client bytes, split anywhere, give the same
messages, control frames and close code as websockets' sans-I/O ``ServerProtocol`` followed by its asyncio
layer's message assembly (UTF-8 decoding and the 4096-fragment limit), with and without permessage-deflate.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway.core.frame_reader import (
    MAX_FRAGMENTS,
    Close,
    Event,
    Failure,
    FrameReader,
    Ping,
    Pong,
    unmask,
)
from tests.security.wire import frame as raw_frame  # one client-frame builder for the tests

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def deflate_pair() -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A client's encoder and a server's decoder agreeing on permessage-deflate (context takeover)."""
    client = PerMessageDeflate(False, False, 15, 15)
    server = PerMessageDeflate(False, False, 15, 15)
    return client, server


def websockets_events(chunks: Sequence[bytes], max_size: int | None, deflate: bool = False) -> list[Event]:
    """What websockets makes of ``chunks``: its protocol's frames, assembled into messages as its asyncio
    connection does; up to and including the first failure, which ends it."""
    protocol = ServerProtocol(state=State.OPEN, max_size=max_size)
    if deflate:
        protocol.extensions = [deflate_pair()[1]]
    events: list[Event] = []
    parts: list[Frame] | None = None
    for chunk in chunks:
        protocol.receive_data(chunk)
        for frame in protocol.events_received():
            assert isinstance(frame, Frame)
            if frame.opcode is Opcode.PING:
                events.append(Ping(bytes(frame.data)))
            elif frame.opcode is Opcode.PONG:
                events.append(Pong(bytes(frame.data)))
            elif frame.opcode is Opcode.CLOSE:
                data = bytes(frame.data)
                code = struct.unpack("!H", data[:2])[0] if data else 1005
                events.append(Close(code, data[2:].decode(), data))
            else:
                if frame.opcode is not Opcode.CONT:
                    parts = []
                assert parts is not None
                if len(parts) >= MAX_FRAGMENTS:
                    return [*events, Failure(1009, "too many fragments")]
                parts.append(frame)
                if frame.fin:
                    payload = b"".join(bytes(f.data) for f in parts)
                    if parts[0].opcode is Opcode.TEXT:
                        try:
                            events.append(payload.decode())
                        except UnicodeDecodeError as exc:
                            return [*events, Failure(1007, f"{exc.reason} at position {exc.start}")]
                    else:
                        events.append(payload)
                    parts = None
        sent = protocol.close_sent
        if sent is not None and sent is not protocol.close_rcvd:  # not an echo: websockets failed it
            return [*events, Failure(sent.code, sent.reason)]
    return events


def reader_events(chunks: Sequence[bytes], max_size: int | None, deflate: bool = False) -> list[Event]:
    reader = FrameReader(max_size, deflate_pair()[1] if deflate else None)
    events: list[Event] = []
    for chunk in chunks:
        events += reader.receive(chunk)
    return events


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def same(
    data: bytes, cuts: Sequence[int] = (), max_size: int | None = 1 << 20, deflate: bool = False
) -> list[Event]:
    chunks = split(data, cuts)
    expected = websockets_events(chunks, max_size, deflate)
    assert reader_events(chunks, max_size, deflate) == expected
    return expected


# -- examples ---------------------------------------------------------------------------------------------


def test_messages_pings_and_a_close_come_out_in_order() -> None:
    data = (
        raw_frame(1, b"hello")
        + raw_frame(2, b"\x00\xff")
        + raw_frame(9, b"p")
        + raw_frame(1, b"frag", fin=False)
        + raw_frame(10, b"q")
        + raw_frame(0, b"ment")
        + raw_frame(8, struct.pack("!H", 1000) + b"bye")
        + raw_frame(1, b"after the close: never read")
    )
    assert same(data) == [
        "hello",
        b"\x00\xff",
        Ping(b"p"),
        Pong(b"q"),
        "fragment",
        Close(1000, "bye", struct.pack("!H", 1000) + b"bye"),
    ]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (raw_frame(1, b"x", mask=False), 1002),
        (raw_frame(3, b"x"), 1002),
        (raw_frame(1, b"x", rsv=4), 1002),
        (raw_frame(0, b"x"), 1002),
        (raw_frame(9, b"p" * 126), 1002),
        (raw_frame(9, b"p", fin=False), 1002),
        (raw_frame(1, b"a", fin=False) + raw_frame(1, b"b"), 1002),
        (raw_frame(8, b"\x03"), 1002),
        (raw_frame(8, struct.pack("!H", 999)), 1002),
        (raw_frame(8, struct.pack("!H", 1005)), 1002),
        (raw_frame(8, struct.pack("!H", 1000) + b"\xff"), 1007),
        (raw_frame(1, b"a", fin=False) + raw_frame(8, struct.pack("!H", 1000)), 1002),
        (raw_frame(1, b"\xed\xa0\x80"), 1007),
        (raw_frame(1, b"ok \xc3", fin=False) + raw_frame(0, b"\x28"), 1007),
        (raw_frame(2, b"x" * 201), 1009),
        (raw_frame(2, b"", length=1 << 40), 1009),
        (raw_frame(2, b"", length=(1 << 63) - 1), 1009),
        (raw_frame(1, b"y" * 120, fin=False) + raw_frame(0, b"y" * 81), 1009),
        (raw_frame(1, b"y" * 120, fin=False) + raw_frame(9, b"p" * 81), 1009),
    ],
)
def test_what_breaks_the_protocol_gets_websockets_close_code(data: bytes, code: int) -> None:
    events = same(data, max_size=200)
    assert isinstance(events[-1], Failure)
    assert events[-1].code == code


def test_a_message_in_more_than_4096_fragments_is_1009() -> None:
    fragments = raw_frame(1, b"a", fin=False) + raw_frame(0, b"", fin=False) * (MAX_FRAGMENTS - 2)
    assert same(fragments + raw_frame(0, b"")) == ["a"]
    events = same(fragments + raw_frame(0, b"", fin=False) + raw_frame(0, b""))
    assert events == [Failure(1009, "too many fragments")]


def test_a_character_split_across_fragments_is_fine() -> None:
    data = raw_frame(1, b"\xc3", fin=False) + raw_frame(0, b"\xa9")
    assert same(data, cuts=range(0, len(data))) == ["\u00e9"]


def test_a_frame_is_refused_on_its_header_before_its_payload_arrives() -> None:
    reader = FrameReader(100)
    assert reader.receive(raw_frame(2, b"", length=101)[:4]) == [
        Failure(1009, "frame with 101 bytes exceeds limit of 100 bytes")
    ]
    assert reader.stopped
    assert reader.receive(b"anything") == []


def test_a_partial_frame_waits_for_the_rest() -> None:
    data = raw_frame(2, b"z" * 70_000)
    reader = FrameReader(None)
    assert reader.receive(data[:3]) == []
    assert reader.receive(data[3:50_000]) == []
    assert reader.receive(data[50_000:]) == [b"z" * 70_000]


def test_compressed_messages_and_fragments_decode_like_websockets() -> None:
    client, _ = deflate_pair()
    data = b"".join(
        Frame(opcode, payload, fin).serialize(mask=True, extensions=[client])
        for opcode, payload, fin in [
            (Opcode.TEXT, b"hello hello hello", True),
            (Opcode.BINARY, bytes(range(256)) * 8, True),
            (Opcode.TEXT, b"part one, ", False),
            (Opcode.CONT, b"part two", True),
        ]
    )
    assert same(data, cuts=[5, 40, 41], deflate=True) == [
        "hello hello hello",
        bytes(range(256)) * 8,
        "part one, part two",
    ]


def test_a_compression_bomb_is_1009_and_rsv1_without_compression_1002() -> None:
    client, _ = deflate_pair()
    bomb = Frame(Opcode.BINARY, b"\x00" * 100_000).serialize(mask=True, extensions=[client])
    assert len(bomb) < 1000
    assert same(bomb, max_size=65_536, deflate=True)[-1] == Failure(
        1009, "frame exceeds limit of 65536 bytes"
    )
    compressed = zlib.compressobj(wbits=-15)
    deflated = compressed.compress(b"hi") + compressed.flush(zlib.Z_SYNC_FLUSH)
    assert same(raw_frame(1, deflated[:-4], rsv=4))[-1] == Failure(1002, "reserved bits must be 0")
    assert same(raw_frame(1, b"not deflate at all", rsv=4), deflate=True)[-1] == Failure(
        1002, "decompression failed"
    )


# -- fuzzing ----------------------------------------------------------------------------------------------

_text = st.text(max_size=40).map(str.encode)
_payload = st.one_of(
    _text,
    st.binary(max_size=40),
    st.binary(min_size=120, max_size=140),  # around the 125-byte control frame limit
    st.builds(lambda n: b"w" * n, st.integers(0, 400)),  # around the message limit
)
_frame_spec = st.tuples(
    st.sampled_from([0, 0, 1, 1, 1, 2, 2, 8, 9, 9, 10, 3, 11]),  # opcode, mostly valid
    _payload,
    st.booleans() | st.just(True),  # fin, mostly set
    st.sampled_from([0] * 12 + [1, 2, 4]),  # rsv bits, mostly clear
    st.sampled_from([True] * 20 + [False]),  # mask
)


def _close_payload(payload: bytes) -> bytes:
    return (
        payload[:1] if len(payload) % 7 == 1 else struct.pack("!H", 1000 + len(payload) % 20) + payload[:100]
    )


@FUZZ
@given(
    st.lists(_frame_spec, max_size=12),
    st.lists(st.integers(min_value=0), max_size=8),
    st.sampled_from([None, 64, 300]),
)
def test_random_frames_split_anywhere_give_what_websockets_gives(
    specs: list[tuple[int, bytes, bool, int, bool]], cuts: list[int], max_size: int | None
) -> None:
    data = b"".join(
        raw_frame(op, _close_payload(payload) if op == 8 else payload, fin, rsv=rsv, mask=mask)
        for op, payload, fin, rsv, mask in specs
    )
    same(data, cuts, max_size)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=6))
def test_random_bytes_give_what_websockets_gives(data: bytes, cuts: list[int]) -> None:
    same(data, cuts, 256)


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from([Opcode.TEXT, Opcode.BINARY]), _text, st.booleans()), max_size=8),
    st.lists(st.integers(min_value=0), max_size=6),
    st.sampled_from([None, 48, 300]),
)
def test_random_compressed_messages_give_what_websockets_gives(
    messages: list[tuple[Opcode, bytes, bool]], cuts: list[int], max_size: int | None
) -> None:
    client, _ = deflate_pair()
    frames: list[bytes] = []
    for opcode, payload, fragmented in messages:
        if fragmented and len(payload) > 1:
            half = len(payload) // 2
            frames.append(Frame(opcode, payload[:half], False).serialize(mask=True, extensions=[client]))
            frames.append(Frame(Opcode.CONT, payload[half:]).serialize(mask=True, extensions=[client]))
        else:
            frames.append(Frame(opcode, payload).serialize(mask=True, extensions=[client]))
    same(b"".join(frames), cuts, max_size, deflate=True)


@FUZZ
@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_xor_with_the_repeated_key(data: bytes, key: bytes) -> None:
    assert unmask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
