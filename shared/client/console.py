"""``python -m shared.client URL [URL ...]``: a tiny console that connects (reconnecting, moving to the
next URL when its node drains or dies) and prints every message that arrives."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from shared.client.client import PrismClient
from shared.client.state import StateChange
from shared.errors import ClientError


async def _console(urls: list[str], user: str | None, token: str | None) -> None:
    def show(change: StateChange) -> None:
        detail = f" code={change.code}" if change.code is not None else ""
        if change.error is not None:
            detail += f" last error: {change.error!r:.120}"
        print(f"[{change.state}] {change.url or ''}{detail}", file=sys.stderr, flush=True)

    async with await PrismClient.connect(
        urls, user=user, token=token, reconnect=True, on_state=show
    ) as client:
        print(f"connected: conn={client.conn_id} node={client.node} user={client.user}", flush=True)
        async for message in client:
            print(
                message if isinstance(message, str) else f"<{len(message)} bytes> {message!r:.80}", flush=True
            )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shared.client URL [URL ...]``: the console; 0 when stopped, 1 when it cannot connect."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.client",
        description="A tiny Prism console: connect to a node and print every message that arrives "
        "(connection changes go to stderr). It reconnects, moving to the next URL when its node drains or "
        "dies, and stops on Ctrl-C or a terminal close.",
        epilog="example: python -m shared.client 'ws://localhost:8080/ws?user=alice' "
        "'ws://localhost:8081/ws?user=alice'",
    )
    parser.add_argument(
        "urls",
        nargs="+",
        metavar="URL",
        help="a node's WebSocket URL, ws:// or wss://, e.g. ws://localhost:8080/ws",
    )
    parser.add_argument("--user", help="user id, sent as ?user= (authentication off, as in prism dev)")
    parser.add_argument("--token", help="a JWT to present (authentication on)")
    args = parser.parse_args(argv)
    for url in args.urls:
        if not url.startswith(("ws://", "wss://")):
            parser.error(f"URL must start with ws:// or wss://, got {url!r}")
    try:
        asyncio.run(_console(args.urls, args.user, args.token))
    except KeyboardInterrupt:
        pass
    except ClientError as exc:
        print(f"python -m shared.client: {exc}", file=sys.stderr)
        return 1
    return 0
