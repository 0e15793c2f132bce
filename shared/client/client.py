"""The client itself: its commands, its deliveries, and the supervisor that replaces a lost connection
(see the package docstring, :mod:`shared.client`, for how to use it)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from shared import frames
from shared.backoff import Backoff
from shared.client.link import Link, Pending, close_of, dial, with_query, with_user
from shared.client.positions import Expected, Positions
from shared.client.reconnect import Reconnect
from shared.client.state import (
    ConnState,
    Delivery,
    RecoveryCallback,
    StateCallback,
    StateChange,
    TokenSource,
)
from shared.client.views import PresenceView, RecoveryView
from shared.errors import ClientError, ConnectFailed, ConnectionLost, RequestFailed
from shared.frames import Position

log = logging.getLogger("prism.client")

# How long close() lets the reader move frames that arrived before the close into the delivery queue.
_READER_GRACE = 1.0


class PrismClient:
    """A Prism client. Create it with :meth:`connect`; see the module docstring for reconnecting."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        backoff: Backoff | None = None,
        randomize: bool = True,
        open_timeout: float = 10.0,
        on_state: StateCallback | None = None,
        max_deliveries: int = 10_000,
        ws_options: dict[str, Any] | None = None,
        token: TokenSource | None = None,
        recover: bool | Position = False,
        on_recovery: RecoveryCallback | None = None,
    ) -> None:
        if not urls:
            raise ValueError("PrismClient needs at least one URL")
        self.urls = tuple(urls)
        self.backoff = backoff
        self._reconnect = Reconnect(self.urls, backoff, randomize)
        self._open_timeout = open_timeout
        self._on_state = on_state
        self._ws_options = dict(ws_options or {})
        self._refs = itertools.count(1)
        self._deliveries: asyncio.Queue[Delivery] = asyncio.Queue(max_deliveries)
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._presence = PresenceView()
        self.presence = self._presence.frames  # room presence frames as they arrive
        self._token = token
        # Joined rooms, in join order (restored after a reconnect), each with whether it recovers.
        self._rooms: dict[str, bool] = {}
        # Recovery: the positions this client holds, whether it wants them for its user stream, and the
        # outcome of every recovery frame.
        self.positions = Positions(recover if isinstance(recover, Position) else None)
        self._recover_user = recover is not False
        self._recoveries = RecoveryView(self.positions, on_recovery)
        self.recoveries = self._recoveries.outcomes
        self._link: Link | None = None
        self._connected = asyncio.Event()  # set while connected and that connection is still open
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._final: ConnectionLost | None = None
        self._closing: ConnectionLost | None = None  # set by close(): what to report as the final close
        self._task: asyncio.Task[None] | None = None
        self.state = ConnState.CONNECTING
        self.reconnects = 0  # successful reconnections (the first connection does not count)
        self.welcome: dict[str, Any] = {}
        self.conn_id = ""
        self.node = ""
        self.user: str | None = None
        self.url = ""

    @classmethod
    async def connect(
        cls,
        url: str | Sequence[str],
        *,
        user: str | None = None,
        reconnect: bool | Backoff = False,
        randomize: bool = True,
        on_state: StateCallback | None = None,
        open_timeout: float = 10.0,
        max_deliveries: int = 10_000,
        token: TokenSource | None = None,
        recover: bool | Position = False,
        on_recovery: RecoveryCallback | None = None,
        **kwargs: Any,
    ) -> PrismClient:
        """Open a WebSocket to ``url`` (or one of several URLs) and return once the welcome arrived.

        ``user``: appended to every URL as ``?user=`` (auth off). ``reconnect``: ``False`` (the default)
        for one connection whose close ends the client; ``True`` to reconnect with the default
        :class:`Backoff` (0.1 s base, 10 s cap, unlimited attempts); or a :class:`Backoff`.
        ``randomize``: with several URLs, start at a random one (spreads clients over nodes) instead of
        the first; after every failure or drop the client moves to the next URL. ``on_state``: called
        with a :class:`StateChange` on every state change and connection attempt (exceptions it raises
        are logged and ignored). ``open_timeout``: seconds for the handshake plus the welcome, and for
        the rejoin after a reconnect. ``max_deliveries``: deliveries buffered before the client stops
        reading its socket. ``token``: a JWT, or a function returning one (or an awaitable of one) that
        is called before every connection attempt; it is sent as ``Authorization: Bearer``.
        ``recover``: True for positions in the user's own stream (``?recover=user``) from now on, or a
        :class:`Position` kept from an earlier client to resume from it; every reconnect resumes from
        the latest. ``on_recovery``: called with each :class:`Recovery` (also queued on
        ``client.recoveries``). Other keyword arguments go to :func:`websockets.asyncio.client.connect`.

        Without ``reconnect`` each URL is tried once, in turn, and the last error is raised as is
        (``OSError``, ``websockets.exceptions.InvalidStatus``, ...). With ``reconnect`` the first
        connection is retried like any reconnection (bound the wait with ``asyncio.timeout``); a
        terminal failure or an exhausted ``max_attempts`` raises :class:`ConnectFailed`.
        """
        urls = [url] if isinstance(url, str) else list(url)
        if user is not None:
            urls = [with_user(u, user) for u in urls]
        kwargs.setdefault("compression", None)
        backoff = Backoff() if reconnect is True else (reconnect or None)
        client = cls(
            urls,
            backoff=backoff,
            randomize=randomize,
            open_timeout=open_timeout,
            on_state=on_state,
            max_deliveries=max_deliveries,
            ws_options=kwargs,
            token=token,
            recover=recover,
            on_recovery=on_recovery,
        )
        await client._start()
        return client

    async def __aenter__(self) -> PrismClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<PrismClient {self.state} conn={self.conn_id} node={self.node} url={self.url}>"

    # -- state -------------------------------------------------------------------------------------
    @property
    def ws(self) -> ClientConnection:
        """The current WebSocket (while reconnecting: the one that was lost)."""
        if self._link is None:
            raise ClientError("not connected yet")
        return self._link.ws

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms this client joined (and will join again after a reconnect), in join order."""
        return tuple(self._rooms)

    @property
    def close_code(self) -> int | None:
        """The final close code once closed for good; otherwise the current connection's (``None``
        while it is open, the lost connection's code while reconnecting)."""
        if self._final is not None:
            return self._final.code
        return self._link.ws.close_code if self._link is not None else None

    @property
    def close_reason(self) -> str | None:
        if self._final is not None:
            return self._final.reason
        return self._link.ws.close_reason if self._link is not None else None

    @property
    def closed(self) -> bool:
        """Closed for good: no more connections will be made."""
        return self._final is not None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once the client is connected (rooms rejoined). Raises :class:`ConnectionLost` if it is
        closed for good, ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._wait_link()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close for good: no reconnect. Deliveries already received stay readable."""
        if self._final is not None:
            return
        link = self._link
        final = ConnectionLost(code, reason)
        self._closing = final
        closed_here = False
        if link is not None and link.ws.state is not State.CLOSED:
            await link.ws.close(code, reason)
            closed_here = True
            if link.reader is not None:
                await asyncio.wait({link.reader}, timeout=_READER_GRACE)
        if link is not None and link.ws.close_code is not None:
            lost = ConnectionLost(*close_of(link.ws))
            # Report the connection's own close unless it was one the client was reconnecting from.
            if closed_here or not self._reconnect.after(lost):
                final = self._closing = lost
        if link is not None and link.reader is not None and not link.reader.done():
            link.reader.cancel()  # blocked on a full delivery queue
            await asyncio.wait({link.reader})
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})
        self._finish(final)

    async def wait_closed(self) -> int | None:
        """Wait until the client is closed for good; return the final close code."""
        await asyncio.shield(self._closed)
        return self.close_code

    # -- commands ----------------------------------------------------------------------------------
    async def join(
        self, room: str, timeout: float = 10.0, *, recover: bool = False, position: Position | None = None
    ) -> None:
        """Join ``room`` (restored after reconnects). ``timeout`` bounds the wait for a connection and
        for the answer; raises :class:`RequestFailed` if refused, :class:`ConnectionLost` if the
        connection is lost before the answer.

        ``recover``: deliveries of the room come with positions (if the room has history), and every
        rejoin resumes from the latest; ``position`` (implies ``recover``): resume from a position kept
        earlier. It returns once what was missed has been received (before its ``ok``)."""
        recover = recover or position is not None
        if position is not None:
            self.positions.rooms[room] = position
        await self._command("join", lambda ref: self._join_frame(room, ref, recover), timeout, room, recover)

    def _join_frame(self, room: str, ref: int, recover: bool) -> bytes:
        if not recover:
            return frames.join(room, ref)
        position = self.positions.rooms.get(room)
        if position is None:
            return frames.join(room, ref, recover=True)
        return frames.join(room, ref, recover=True, epoch=position.epoch, seq=position.seq)

    def position(self, room: str | None = None) -> Position | None:
        """The client's position in ``room``, or in its user stream (``room`` None); None before the
        node sent one."""
        return self.positions.rooms.get(room) if room is not None else self.positions.user

    async def leave(self, room: str, timeout: float = 10.0) -> None:
        """Leave ``room``. The room is forgotten (not rejoined) once the node confirms, or if the
        connection is lost before the answer (the new connection is not in it either)."""
        await self._command("leave", lambda ref: frames.leave(room, ref), timeout, room)

    async def send_event(self, name: str, data: Any = None, *, timeout: float | None = 10.0) -> None:
        """Fire-and-forget event to the backends (subject ``client.event.<name>``).

        While reconnecting it waits for the next connection, at most ``timeout`` seconds
        (``TimeoutError``); it raises :class:`ConnectionLost` if the client is closed for good, or if
        the connection broke while the frame was being written (it may or may not have arrived)."""
        await self._send(frames.event(name, data), timeout, text=True)

    async def request(self, name: str, data: Any = None, timeout: float = 10.0) -> Any:
        """Send an event as a request and return the backend's reply ``data``. ``timeout`` bounds the
        wait for a connection and for the reply. A request in flight when the connection is lost fails
        with :class:`ConnectionLost` and is not resent."""
        answer = await self._command("request", lambda ref: frames.event(name, data, ref), timeout, None)
        return answer.get("data")

    async def refresh(self, token: str, timeout: float = 10.0) -> None:
        """Replace the connection's token before it expires (authentication on): the node checks it and
        answers ``ok``, or raises :class:`RequestFailed`. A client given a token string uses the new one
        for later reconnects too (a token function is simply called again)."""
        await self._command("refresh", lambda ref: frames.refresh(token, ref), timeout, None)
        if not callable(self._token):
            self._token = token

    def members(self, room: str) -> tuple[str, ...]:
        """The users in ``room`` by its presence frames (sorted; empty for a room without presence
        events, or not joined)."""
        return self._presence.members(room)

    async def send(self, message: str | bytes, *, timeout: float | None = 10.0) -> None:
        """Send a raw frame (published on ``client.message``); waits like :meth:`send_event`."""
        await self._send(message, timeout)

    async def _send(self, message: str | bytes, timeout: float | None, text: bool | None = None) -> None:
        async with asyncio.timeout(timeout):
            link = await self._open_link()
        try:
            await link.ws.send(message, text=text)
        except ConnectionClosed as exc:
            raise ConnectionLost(*close_of(link.ws, exc)) from None

    async def _command(
        self,
        kind: str,
        build: Callable[[int], bytes],
        timeout: float | None,
        room: str | None,
        recover: bool = False,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            link = await self._open_link()
            ref = next(self._refs)
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            link.pending[ref] = Pending(future, kind, room, recover)
            try:
                with contextlib.suppress(ConnectionClosed):  # the reader then fails ``future``
                    await link.ws.send(build(ref), text=True)
                answer = await future
            finally:
                link.pending.pop(ref, None)
        if answer.get("prism") == "error":
            raise RequestFailed(str(answer.get("code")), str(answer.get("message")))
        return answer

    async def _open_link(self) -> Link:
        """The current connection once it is connected and still open (a frame sent now is written)."""
        while True:
            link = await self._wait_link()
            if link.ws.state is State.OPEN:
                return link
            await link.closed.wait()  # closing: the reader will end it and the supervisor move on

    async def _wait_link(self) -> Link:
        while True:
            if self._final is not None:
                raise self._lost()
            if self._connected.is_set() and self._link is not None:
                return self._link
            waiter = asyncio.ensure_future(self._connected.wait())
            either: set[asyncio.Future[Any]] = {waiter, self._closed}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    # -- deliveries --------------------------------------------------------------------------------
    async def receive(self, timeout: float | None = None) -> Delivery:
        """The next message from a backend, exactly as it was published. While reconnecting it waits;
        once closed for good and drained it raises :class:`ConnectionLost` with the final close code."""
        if not self._deliveries.empty():
            return self._deliveries.get_nowait()
        if self._final is not None:
            raise self._lost()
        get = asyncio.ensure_future(self._deliveries.get())
        either: set[asyncio.Future[Any]] = {get, self._closed}
        try:
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()  # Queue.get leaves the item in the queue when cancelled
        if get.done() and not get.cancelled():
            return get.result()
        if not self._deliveries.empty():
            return self._deliveries.get_nowait()
        if self._final is not None:
            raise self._lost()
        raise TimeoutError(f"no delivery within {timeout}s")

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.receive()
            except ConnectionLost:
                return

    # -- connection life ---------------------------------------------------------------------------
    async def _start(self) -> None:
        try:
            link = await self._establish(None)
        except BaseException as exc:
            lost = exc if isinstance(exc, ConnectionLost) else ConnectionLost(None, f"{exc!r}")
            self._finish(lost)
            raise
        self._set_connected(link)
        self._task = asyncio.create_task(self._supervise(link))

    async def _supervise(self, link: Link) -> None:
        """Wait for the connection to end; reconnect or finish."""
        final: ConnectionLost
        try:
            while True:
                await link.closed.wait()
                lost = ConnectionLost(*close_of(link.ws))
                if self._closing is not None or not self._reconnect.after(lost):
                    final = self._closing or lost
                    break
                log.info("connection to %s lost (%s %s): reconnecting", link.url, lost.code, lost.reason)
                self._reconnect.moved_on_from(link)
                link = await self._establish(lost)
                self.reconnects += 1
                self._set_connected(link)
        except ConnectionLost as exc:
            final = self._closing or exc
        except asyncio.CancelledError:
            self._finish(self._closing or ConnectionLost(None, "cancelled"))
            raise
        except Exception as exc:  # a bug: report it instead of leaving the client hanging
            log.exception("Prism client supervisor failed")
            final = ConnectionLost(None, f"client error: {exc!r}")
        self._finish(final)

    async def _establish(self, cause: ConnectionLost | None) -> Link:
        """Open a connection (dial, welcome, rejoin); retry per the backoff policy if there is one."""
        return await self._reconnect.establish(self._open, self._emit, cause, lambda: self._closing)

    async def _open(self, index: int) -> Link:
        url = self.urls[index]
        ws, welcome = await self._dial(url)
        link = Link(ws, welcome, url, index)
        link.reader = asyncio.create_task(self._read(link))
        self._link = link
        self.welcome = welcome
        self.conn_id = welcome["conn"]
        self.node = welcome["node"]
        self.user = welcome.get("user")
        self.url = url
        try:
            await self._rejoin(link)
        except BaseException:
            await ws.close()
            await asyncio.wait({link.reader}, timeout=_READER_GRACE)
            if not link.reader.done():
                link.reader.cancel()
            raise
        return link

    async def _dial(self, url: str) -> tuple[ClientConnection, dict[str, Any]]:
        """Open the WebSocket (with the token, and the user stream's position) and read the welcome."""
        options = dict(self._ws_options)
        if self._token is not None:
            token = self._token() if callable(self._token) else self._token
            if not isinstance(token, str):
                token = await token
            headers = dict(options.get("additional_headers") or {})
            headers["Authorization"] = f"Bearer {token}"
            options["additional_headers"] = headers
        if self._recover_user:  # the user stream with positions, from where the last connection got to
            url = with_query(url, self.positions.user_query())
        return await dial(url, self._open_timeout, options)

    async def _rejoin(self, link: Link) -> None:
        """Join every tracked room on a new connection; drop (and report) the ones refused."""
        if not self._rooms:
            return
        loop = asyncio.get_running_loop()
        waits: list[tuple[str, int, asyncio.Future[dict[str, Any]]]] = []
        for room, recover in self._rooms.items():
            ref = next(self._refs)
            future: asyncio.Future[dict[str, Any]] = loop.create_future()
            link.pending[ref] = Pending(future, "rejoin", room, recover)
            waits.append((room, ref, future))
        try:
            with contextlib.suppress(ConnectionClosed):  # the reader then fails the futures
                for room, ref, _ in waits:
                    frame = self._join_frame(room, ref, self._rooms.get(room, False))
                    await link.ws.send(frame, text=True)
            async with asyncio.timeout(self._open_timeout):
                answers = await asyncio.gather(*(future for _, _, future in waits))
        finally:
            for _, ref, _ in waits:
                link.pending.pop(ref, None)
        for (room, _, _), answer in zip(waits, answers, strict=True):
            if answer.get("prism") == "error":
                log.warning("rejoining %r refused: %s", room, answer.get("message"))
                self._rooms.pop(room, None)
                self.positions.forget_room(room)
                self.errors.put_nowait({**answer, "room": room})

    async def _read(self, link: Link) -> None:
        ws = link.ws
        expected: Expected | None = None  # the position of the delivery that comes next (a pos frame)
        try:
            async for message in ws:
                if frames.is_prism_frame(message):
                    try:
                        frame = orjson.loads(message)
                    except orjson.JSONDecodeError:
                        log.warning("ignoring a gateway frame that is not JSON: %r", message[:200])
                        continue
                    if not isinstance(frame, dict):
                        continue
                    kind = frame.get("prism")
                    if kind == "pos":
                        expected = self.positions.expect(frame)
                    elif kind == "mark":
                        self.positions.mark(frame)
                    elif kind == "recovery":
                        self._recoveries.on_frame(frame)
                    else:
                        self._dispatch(link, frame)
                else:
                    if expected is not None:
                        fresh = self.positions.accept(expected)
                        expected = None
                        if not fresh:
                            continue  # already received before a reconnect
                    await self._deliveries.put(message)
        except ConnectionClosed:
            pass
        finally:
            lost = ConnectionLost(*close_of(ws))
            for pending in link.pending.values():
                if pending.kind == "leave" and pending.room is not None:
                    self._rooms.pop(pending.room, None)  # the next connection is not in it either
                if not pending.future.done():
                    pending.future.set_exception(lost)
            link.closed.set()
            if self._link is link:
                self._connected.clear()

    def _dispatch(self, link: Link, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        pending = link.pending.get(ref) if isinstance(ref, (int, str)) else None
        if pending is not None and not pending.future.done():
            if frame.get("prism") == "ok" and pending.room is not None:
                if pending.kind == "leave":
                    self._rooms.pop(pending.room, None)
                    self._presence.forget(pending.room)
                    self.positions.forget_room(pending.room)
                else:
                    self._rooms[pending.room] = pending.recover
            pending.future.set_result(frame)
        elif frame.get("prism") == "error":
            self.errors.put_nowait(frame)
        elif frame.get("prism") == "presence":
            self._presence.on_frame(frame)

    def _set_connected(self, link: Link) -> None:
        if link.closed.is_set() or self._final is not None:
            return  # already lost again: the supervisor will notice
        self._connected.set()
        self._emit(StateChange(ConnState.CONNECTED, url=link.url))

    def _finish(self, final: ConnectionLost) -> None:
        if self._final is not None:
            return
        self._final = final
        self._connected.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        self._emit(StateChange(ConnState.CLOSED, url=self.url or None, code=final.code, reason=final.reason))

    def _lost(self) -> ConnectionLost:
        """A fresh exception describing the final close (raised once per caller)."""
        final = self._final
        assert final is not None
        if isinstance(final, ConnectFailed):
            return ConnectFailed(final.code, final.reason, final.status, final.attempts)
        return ConnectionLost(final.code, final.reason)

    def _emit(self, change: StateChange) -> None:
        self.state = change.state
        if self._on_state is not None:
            try:
                self._on_state(change)
            except Exception:
                log.exception("on_state callback failed")
