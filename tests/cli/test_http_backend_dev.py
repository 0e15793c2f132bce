"""``prism dev --http-backend``: the README's HTTP tour against real processes. The example HTTP backend
(shared/http_demo.py, Starlette on uvicorn) decides connects, answers ``http.*`` events and hears
disconnects; the nodes' HTTP API delivers to clients; Ctrl-C leaves nothing behind. ``prism http-demo``
and ``prism gateway`` say what is wrong in one line."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import aiohttp
import pytest

from shared.client import PrismClient
from shared.errors import RequestFailed
from tests.cli.test_prism_command import prism, read_banner
from tests.helpers import alive, descendants, dev_env, eventually, free_port_pair

pytestmark = pytest.mark.cli


async def test_the_http_tour_of_the_readme_runs_on_prism_dev() -> None:
    port = free_port_pair()
    async with prism(
        "dev", "--nodes", "2", "--port", str(port), "--http-backend", env=dev_env(PRISM_DRAIN_SECONDS="0")
    ) as proc:
        banner = await read_banner(proc)
        assert f"http api  http://localhost:{port + 100}  http://localhost:{port + 101}" in banner
        key = banner.split(" key ", 1)[1].split()[0]
        demo = f"http://127.0.0.1:{port + 200}"
        assert f"http demo http://localhost:{port + 200}" in banner
        children = descendants(proc.pid)

        # a connection the HTTP backend lets in, into the room its query names
        alice = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws?room=lobby", user="alice")
        bob = await PrismClient.connect(f"ws://127.0.0.1:{port + 1}/ws?room=lobby", user="bob")
        echo = await alice.request("http.echo", {"a": 1})
        assert echo["echo"] == {"a": 1}
        assert echo["user"] == "alice"
        assert "greeted_at" in echo["claims"]
        shout = await alice.request("http.shout", {"room": "lobby", "text": "hi all"})
        assert shout["delivered"] == 2  # through the HTTP API: the backend never touched NATS
        for client in (alice, bob):
            assert await client.receive(5) == '{"type":"shout","from":"alice","text":"hi all"}'
        with pytest.raises(RequestFailed) as failed:
            await alice.request("http.shout", {"text": "no room"})
        assert failed.value.code == "backend_error"
        echo_from_nats = await alice.request("echo", {"b": 2})  # the NATS demo backend, side by side
        assert echo_from_nats == {"b": 2}

        # the HTTP API of either node reaches alice on node1
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port + 101}/v1/users/alice/messages"
            async with session.post(url, data=b"hi", headers=headers) as response:
                assert response.status == 200
                assert (await response.json())["delivered"] == 1
            assert await alice.receive(5) == "hi"
            async with session.post(url, data=b"hi") as response:
                assert response.status == 401

            # a blocked user is refused before its welcome
            with pytest.raises(Exception, match="4503"):
                await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="blocked")
            await alice.close()
            await bob.close()

            async def heard_both() -> bool:
                async with session.get(f"{demo}/stats") as response:
                    stats = await response.json()
                return bool(stats["disconnects"] == 2 and stats["connects"] == 3)  # blocked: no disconnect

            await eventually(heard_both, what="the backend to hear both disconnects")

        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await eventually(lambda: not any(alive(pid) for pid in children), what="every child to exit")


async def test_bad_settings_are_one_line_and_exit_2(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = str(taken.getsockname()[1])
    routes = tmp_path / "routes.toml"
    routes.write_text('[[backend]]\nname = "app"\nevent_url = "http://127.0.0.1:1/e"\nevents = ["x"]\n')
    cases = [
        (["gateway", "--http-backends-file", str(routes)], "set secret_env"),
        (["gateway", "--http-backends-file", str(tmp_path / "nope.toml")], "No such file or directory"),
        (["gateway", "--api-port", "9999"], "api_port needs credentials"),
        (["gateway", "--api-port", "9999", "--api-keys", "short"], "at least 32 characters"),
        (["http-demo"], "PRISM_HTTP_DEMO_SECRET"),
        (
            ["gateway", "--host", "127.0.0.1", "--port", "0", "--api-port", busy, "--api-keys", "k" * 32],
            "the port is in use by another process (choose another with --api-port or PRISM_API_PORT)",
        ),
    ]
    for args, says in cases:
        async with prism(*args, env=dev_env()) as proc:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            lines = out.decode().strip().splitlines()
            assert proc.returncode == 2, out
            assert len(lines) == 1, out
            assert lines[0].startswith("prism: configuration error: ")
            assert says in lines[0]
    taken.close()
