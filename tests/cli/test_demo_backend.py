"""What a new user tries first works against a plain ``prism dev``: the requests the web console, the SDK
docs, the locustfile and the k6 script send are answered by the demo backend it runs; ``prism
demo-backend`` runs on its own; the load-test commands say which extra they need."""

from __future__ import annotations

import asyncio
import html
import re
import signal
import sys
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from shared.client import PrismClient
from shared.errors import RequestFailed
from tests.cli.test_prism_command import prism, read_banner
from tests.helpers import dev_env, free_port_pair, read_until

pytestmark = pytest.mark.cli

REPO = Path(__file__).resolve().parents[2]


def found(pattern: str, path: str) -> str:
    """The first group of ``pattern`` in the repository file ``path``."""
    match = re.search(pattern, (REPO / path).read_text())
    assert match is not None, f"{pattern!r} is not in {path} any more: update this test"
    return match.group(1)


def default_requests() -> list[tuple[str, str, Any]]:
    """(who sends it, event, data) for every request the console, the docs and the load tests send by
    default, read from their sources so that this test follows them."""
    console = "gateway/web/console/index.html"
    return [
        (
            "the console's Send request",
            found(r'id="event"[^>]*value="([^"]+)"', console),
            orjson.loads(html.unescape(found(r'id="data"[^>]*>([^<]*)</textarea>', console))),
        ),
        ("docs/browser.md", found(r'client\.request\("([^"]+)", \{ a: 1 \}', "docs/browser.md"), {"a": 1}),
        (
            "the locustfile",
            found(
                r'REQUEST_EVENT = os\.environ\.get\("PRISM_REQUEST_EVENT", "([^"]+)"\)',
                "loadtest/locustfile.py",
            ),
            {"user": "locust-1-1", "t": 1.0},
        ),
        (
            "the k6 script",
            found(r"REQUEST_EVENT === undefined \? '([^']+)'", "loadtest/k6/prism.js"),
            {"user": "vu1", "t": 1},
        ),
    ]


async def test_prism_dev_answers_the_requests_the_console_docs_and_load_tests_send() -> None:
    port = free_port_pair()
    async with prism(
        "dev", "--nodes", "2", "--port", str(port), env=dev_env(PRISM_DRAIN_SECONDS="0")
    ) as proc:
        banner = await read_banner(proc)
        assert "demo      answers echo, chat.send, chat.history" in banner
        alice = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="alice")
        bob = await PrismClient.connect(f"ws://127.0.0.1:{port + 1}/ws", user="bob")
        room = found(r'id="room"[^>]*value="([^"]+)"', "gateway/web/console/index.html")
        for client in (alice, bob):
            await client.join(room)
        for who, event, data in default_requests():
            try:
                reply = await alice.request(event, data, timeout=10)
            except RequestFailed as exc:
                pytest.fail(f"{who} sends {event!r} {data}: {exc.code} {exc}")
            assert not (isinstance(reply, dict) and "error" in reply), f"{who}: {reply}"
            if event == "echo":
                assert reply == data
        # The console's default request was a chat message to its default room: bob got it on node2.
        message = orjson.loads(await bob.receive(10))
        assert (message["type"], message["from"], message["room"]) == ("chat", "alice", room)
        history = await bob.request("chat.history", {"room": room})
        assert [m["id"] for m in history["messages"]] == [message["id"]]
        for client in (alice, bob):
            await client.close()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_prism_dev_without_the_demo_backend_leaves_those_events_to_yours() -> None:
    port = free_port_pair()
    args = ("dev", "--nodes", "1", "--port", str(port), "--no-demo-backend")
    async with prism(*args, env=dev_env(PRISM_DRAIN_SECONDS="0")) as proc:
        assert "demo " not in await read_banner(proc)
        async with await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="alice") as client:
            with pytest.raises(RequestFailed) as failed:
                await client.request("echo", {"a": 1})
            assert failed.value.code == "no_responders"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_prism_demo_backend_runs_on_its_own_and_drains_on_sigterm(nats_server: Any) -> None:
    env = dev_env(PRISM_NATS_URL=nats_server.url)
    env["PRISM_NATS_URL"] = nats_server.url  # dev_env drops it: this one is not prism dev
    async with prism("demo-backend", env=env) as proc:
        assert proc.stdout is not None
        ready = await read_until(proc.stdout, "prism demo-backend ready")
        assert "client.event.echo, client.event.chat.send, client.event.chat.history" in ready
        nc = await nats.connect(nats_server.url)
        try:  # a backend needs no gateway to be asked: a NATS request on the subject a node would use
            reply = await nc.request("client.event.echo", b'{"plain":"nats"}', timeout=5)
            assert reply.data == b'{"plain":"nats"}'
        finally:
            await nc.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


# -- the load-test commands without the loadtest extra -------------------------------------------------

# Runs a command as after `pip install -e .` alone: the loadtest extra's modules cannot be imported.
_WITHOUT_EXTRA = """
import runpy, sys
for name in ("rich", "picows", "matplotlib", "numpy", "locust", "gevent", "websocket"):
    sys.modules[name] = None  # import fails with ModuleNotFoundError, as when it is not installed
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


async def run_without_extra(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WITHOUT_EXTRA, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (("shared.cli", "loadtest", "--help"), "prism loadtest"),
        (("shared.cli", "loadtest", "--scenarios", "conn"), "prism loadtest"),
        (("loadtest", "--help"), "python -m loadtest"),
    ],
)
async def test_load_test_commands_without_the_extra_name_it_in_one_line(
    args: tuple[str, ...], command: str
) -> None:
    code, output = await run_without_extra(*args)
    assert code == 1, output
    needs = f"{command} needs the loadtest extra (no module named 'rich')"
    assert output == f"{needs}; install it with: pip install -e '.[loadtest]'\n"


async def test_installing_a_peer_does_not_need_the_extra() -> None:
    code, output = await run_without_extra("loadtest.peers", "install", "no-such-peer")
    assert code == 2, output
    assert output.startswith("usage: python -m loadtest.peers install")
