"""Tests for gateway.core.framing: pre-built server frames equal websockets' own and parse back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from gateway.core.framing import encode_frame, is_valid_utf8

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
BOUNDARY_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]

# Short random payloads, plus long ones of any length up to 70 000 so that all three length encodings
# (7-bit, 16-bit, 64-bit) are exercised.
_payloads = st.binary(max_size=300) | st.builds(
    lambda head, length: (head * (length // max(len(head), 1) + 1))[:length],
    st.binary(min_size=1, max_size=64),
    st.integers(min_value=0, max_value=70_000),
)


def websockets_frame(payload: bytes, *, binary: bool) -> bytes:
    opcode = Opcode.BINARY if binary else Opcode.TEXT
    return Frame(opcode, payload).serialize(mask=False)


def client_reads(data: bytes) -> list[Frame]:
    """Feed ``data`` to websockets' sans-I/O client, as if it arrived from a server after the handshake."""
    client = ClientProtocol(parse_uri("ws://prism.test/ws"), state=State.OPEN, max_size=None)
    client.receive_data(data)
    frames = client.events_received()
    assert all(isinstance(frame, Frame) for frame in frames)
    assert client.state is State.OPEN
    assert client.data_to_send() == []
    return [frame for frame in frames if isinstance(frame, Frame)]


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
@pytest.mark.parametrize("binary", [False, True])
def test_frame_bytes_equal_websockets_serialization(length: int, binary: bool) -> None:
    payload = bytes(i % 251 for i in range(length)) if binary else b"x" * length
    assert encode_frame(payload, binary=binary) == websockets_frame(payload, binary=binary)


@pytest.mark.parametrize("length", BOUNDARY_LENGTHS)
@pytest.mark.parametrize("binary", [False, True])
def test_client_parser_reads_the_frame_back(length: int, binary: bool) -> None:
    payload = b"y" * length
    [frame] = client_reads(encode_frame(payload, binary=binary))
    assert frame.opcode is (Opcode.BINARY if binary else Opcode.TEXT)
    assert frame.fin
    assert frame.data == payload


@pytest.mark.parametrize(
    ("length", "header_size"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70000, 10)]
)
def test_header_size_follows_the_length_encoding(length: int, header_size: int) -> None:
    assert len(encode_frame(b"z" * length, binary=True)) == length + header_size


def test_first_byte_has_fin_and_the_opcode_and_no_mask_bit() -> None:
    text = encode_frame(b"hi", binary=False)
    binary = encode_frame(b"hi", binary=True)
    assert text[0] == 0x81
    assert binary[0] == 0x82
    assert text[1] & 0x80 == 0
    assert binary[1] & 0x80 == 0


def test_several_frames_in_one_read_are_all_parsed() -> None:
    payloads = [b"", b"one", b"\xff" * 200, b"t" * 70000]
    data = b"".join(encode_frame(p, binary=True) for p in payloads)
    assert [frame.data for frame in client_reads(data)] == payloads


@PROPERTY_SETTINGS
@given(_payloads)
def test_random_binary_payloads_equal_websockets_and_parse_back(payload: bytes) -> None:
    frame = encode_frame(payload, binary=True)
    assert frame == websockets_frame(payload, binary=True)
    [parsed] = client_reads(frame)
    assert parsed.opcode is Opcode.BINARY
    assert parsed.data == payload


@PROPERTY_SETTINGS
@given(st.text(max_size=20_000).map(str.encode))
def test_random_text_payloads_equal_websockets_and_parse_back(payload: bytes) -> None:
    frame = encode_frame(payload, binary=False)
    assert frame == websockets_frame(payload, binary=False)
    [parsed] = client_reads(frame)
    assert parsed.opcode is Opcode.TEXT
    assert bytes(parsed.data).decode() == payload.decode()


@pytest.mark.parametrize(
    ("payload", "valid"),
    [
        (b"", True),
        (b"ascii", True),
        ("h\u00e9 \U0001f600".encode(), True),
        (b"\xff", False),
        (b"\xc3", False),
    ],
)
def test_is_valid_utf8(payload: bytes, valid: bool) -> None:
    assert is_valid_utf8(payload) is valid


def test_surrogate_encoded_bytes_are_not_valid_utf8() -> None:
    assert not is_valid_utf8(b"\xed\xa0\x80")
