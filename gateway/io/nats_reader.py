"""Prism's own reader of the NATS wire protocol, in nats-py's parser's place, for the delivery hot path.

nats-py's parser matches every message with regular expressions, awaits two coroutines per message,
parses its headers and builds a ``Msg``, also when the subscriber is a
:class:`~gateway.io.direct_subscription.DirectSubscription` that only wants subject, reply, payload and
headers. On the 1:1 delivery path that was about a third of the gateway's CPU (py-spy, see
docs/benchmarks.md). :class:`DeliveryReader` takes the parser's place in a nats-py client (the
``_ps`` attribute; nats-py calls only ``parse`` and ``reset`` on it): messages for direct subscriptions
are cut out of the read buffer with ``find`` and handed straight to their handler, with no coroutine,
no ``Msg`` and no copy of the buffer. Everything else (JetStream, request inboxes, ordinary
subscriptions, PING, PONG, INFO, +OK, -ERR) goes to the client's own ``_process_*`` coroutines with the
same arguments nats-py's parser would pass, so the client behaves exactly as before.

:func:`install` checks the nats-py internals this relies on and leaves the client alone when a
release has changed them.
"""

from __future__ import annotations

import json
import logging

from nats.aio.client import Client as NatsClient
from nats.errors import ProtocolError

from gateway.io.direct_subscription import DirectSubscription

log = logging.getLogger("prism.bus")

_CRLF = b"\r\n"
_PLAIN_HEADER = b"NATS/1.0\r\n"  # a header block with no inline status (those go to nats-py)
# The longest control line a message may have before it is a protocol error: subject and reply are
# bounded by the server's max_control_line (4 KB by default).
MAX_CONTROL_LINE = 4096
_CLIENT_METHODS = ("_process_msg", "_process_ping", "_process_pong", "_process_info", "_process_err")


def supported(nc: NatsClient) -> bool:
    """Whether this nats-py has what :class:`DeliveryReader` stands in for and calls."""
    parser = getattr(nc, "_ps", None)
    return (
        parser is not None
        and callable(getattr(parser, "parse", None))
        and callable(getattr(parser, "reset", None))
        and all(callable(getattr(nc, name, None)) for name in _CLIENT_METHODS)
        and callable(getattr(NatsClient, "_parse_header_lines", None))
        and isinstance(getattr(nc, "_subs", None), dict)
        and isinstance(getattr(nc, "stats", None), dict)
    )


def install(nc: NatsClient) -> bool:
    """Put a :class:`DeliveryReader` in ``nc`` before it connects; False (and nats-py's parser kept) if
    this nats-py is not one it knows."""
    if not supported(nc):
        return False
    nc._ps = DeliveryReader(nc)  # type: ignore[assignment]
    return True


def parse_headers(block: bytes) -> dict[str, str] | None:
    """A header block without an inline status, as nats-py's ``_parse_header_lines`` parses it: ``Name:
    value`` lines, names ASCII with no whitespace (others skipped), values stripped and decoded with
    replacement, the last of a repeated name kept; ``None`` when there is no header. nats-py's own
    version tests each character of a name in a generator, a few microseconds per message here."""
    headers: dict[str, str] = {}
    for line in block[len(_PLAIN_HEADER) :].split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        if len(name.split()) != 1 or not name.isascii():
            continue
        headers[name.decode()] = value.strip().decode("utf-8", "replace")
    return headers or None


class DeliveryReader:
    """nats-py's ``Parser`` interface: ``await parse(chunk)`` for each read, ``reset()`` on reconnect."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._rest = b""  # an incomplete operation left at the end of the last chunk
        self._epoch = 0  # bumped by reset(): a chunk being parsed when the connection was reset is dropped

    def __repr__(self) -> str:
        return f"<prism nats reader, {len(self._rest)} bytes pending>"

    def reset(self) -> None:
        self._rest = b""
        self._epoch += 1

    async def parse(self, data: bytes = b"") -> None:
        if self._rest:
            data = self._rest + data
            self._rest = b""
        nc = self.nc
        subs = nc._subs
        stats = nc.stats
        end = len(data)
        pos = 0
        epoch = self._epoch
        while pos < end:
            eol = data.find(_CRLF, pos)
            if eol < 0:
                if end - pos > MAX_CONTROL_LINE:
                    raise ProtocolError("nats: control line too long")
                break
            if data.startswith(b"MSG ", pos):
                args = data[pos + 4 : eol].split()
                header_size = 0
            elif data.startswith(b"HMSG ", pos):
                args = data[pos + 5 : eol].split()
                header_size = _number(args.pop(-2)) if len(args) > 3 else -1
            else:
                await self._control(data[pos:eol])
                if self._epoch != epoch:
                    return  # the client reset the connection (an -ERR, say): the rest is stale
                pos = eol + 2
                continue
            if len(args) == 3 and header_size >= 0:
                subject, sid, size_arg = args
                reply = b""
            elif len(args) == 4 and header_size >= 0:
                subject, sid, reply, size_arg = args
            else:
                raise ProtocolError(f"nats: malformed message line {data[pos : min(eol, pos + 64)]!r}")
            start = eol + 2
            stop = start + _number(size_arg)
            if stop + 2 > end:
                break  # the payload has not all arrived: keep the whole operation for the next chunk
            pos = stop + 2
            sub_id = _number(sid)
            sub = subs.get(sub_id)
            if type(sub) is not DirectSubscription:
                header = data[start : start + header_size] if header_size else None
                payload = data[start + header_size : stop]
                await nc._process_msg(sub_id, subject, reply, payload, header)  # type: ignore[arg-type]
                if self._epoch != epoch:
                    return
                continue
            stats["in_msgs"] += 1
            stats["in_bytes"] += stop - start - header_size
            sub._received += 1
            if header_size:
                block = data[start : start + header_size]
                if block.startswith(_PLAIN_HEADER):
                    headers = parse_headers(block)
                else:  # an inline status line: nats-py's own parsing
                    headers = await nc._process_headers(block)
                payload = data[start + header_size : stop]
            else:
                headers = None
                payload = data[start:stop]
            dispatch = sub._pending_queue  # a Dispatch: see DirectSubscription
            dispatch.deliver(subject.decode(), reply.decode(), payload, headers)  # type: ignore[attr-defined]
        if pos < end:
            self._rest = data[pos:]

    async def _control(self, line: bytes) -> None:
        nc = self.nc
        op = line.split(None, 1)[0].upper() if line.strip() else b""
        if op == b"PING":
            await nc._process_ping()
        elif op == b"PONG":
            await nc._process_pong()
        elif op == b"+OK":
            pass
        elif op == b"-ERR":
            # As nats-py's parser: the quoted text, lower-cased, quotes kept.
            await nc._process_err(line[4:].strip().decode(errors="replace").lower())
        elif op == b"INFO":
            await nc._process_info(json.loads(line[4:].strip()))
        else:
            raise ProtocolError(f"nats: unknown protocol operation {line[:32]!r}")


def _number(token: bytes) -> int:
    try:
        return int(token)
    except ValueError:
        raise ProtocolError(f"nats: malformed number {token[:32]!r} in a message line") from None
