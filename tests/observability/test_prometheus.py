"""The dashboards against a real Prometheus: every panel query of every dashboard returns data while a
two-node ``prism dev`` carries a small load, and the alert rules pass ``promtool``.

Prometheus and promtool come from Debian's ``prometheus`` package (``.ci/run`` installs it); without
them these tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest

from gateway.metrics import NAMES
from grafana import dashboards as gd
from loadtest.targets.base import free_port
from shared.backend import PrismBackend
from shared.client import PrismClient
from tests.helpers import (
    alive,
    descendants,
    eventually,
    free_port_pair,
    kill_process_tree,
    read_until,
    spawn_prism_dev,
)

pytestmark = pytest.mark.cli

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTS = gd.ALERTS_FILE
ALERT_TESTS = ALERTS.with_name("prism.rules.test.yml")
# Grafana's variables, as Grafana would substitute them for a 1 s scrape interval and "All" nodes.
VARIABLES = {"$__rate_interval": "10s", "$__interval": "2s", "$node": ".*", "${datasource}": "prometheus"}


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def scrape_config(nodes: list[str], notify: str) -> str:
    return json.dumps(  # JSON is YAML
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "prism-gateway", "static_configs": [{"targets": nodes}]},
                {"job_name": "prism-notify", "static_configs": [{"targets": [notify]}]},
            ],
        }
    )


def spawn_prometheus(tmp: Path, config: str, port: int) -> subprocess.Popen[bytes]:
    """Debian's Prometheus on 127.0.0.1:``port`` with its data and log in ``tmp`` (no Docker)."""
    assert PROMETHEUS is not None
    (tmp / "prometheus.yml").write_text(config)
    with open(tmp / "prometheus.log", "wb") as log:
        return subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


async def start_prometheus(tmp: Path, config: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = spawn_prometheus(tmp, config, port)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.poll() is None, (tmp / "prometheus.log").read_text()
        try:
            return bool(await asyncio.to_thread(get_json, f"{url}/api/v1/status/buildinfo"))
        except OSError:
            return False

    await eventually(ready, timeout=30, what="Prometheus to answer")
    return proc, url


async def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop Prometheus by its PID: SIGTERM, then SIGKILL if it has not exited within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def load(port: int, nats_url: str) -> list[PrismClient]:
    """A few clients on both nodes, rooms, stamped deliveries with receipts, a client event, a
    notification, a refused frame and a closed connection: every series the dashboards draw."""
    alice = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="alice")
    bob = await PrismClient.connect(f"ws://127.0.0.1:{port + 1}/ws", user="bob")
    carol = await PrismClient.connect(f"ws://127.0.0.1:{port + 1}/ws", user="carol")
    for client in (alice, bob, carol):
        await client.join("lobby")
    nc = await nats.connect(nats_url)
    try:
        backend = PrismBackend(nc, sent_at=True)
        receipts = await backend.deliver("room.lobby", "hello room")
        assert sorted(r["node"] for r in receipts) == ["node1", "node2"]
        await backend.deliver(f"conn.{alice.conn_id}", "hello alice")
        await backend.to_user("bob", "hello bob")
        await alice.send_event("chat.send", {"text": "hi"})
        await nc.publish("notify.user.carol", b'{"id":"n1","payload":"you have mail"}')
        for client, expected in ((alice, 2), (bob, 2), (carol, 2)):  # room, then conn/user/notification
            for _ in range(expected):
                await client.receive(10)
        # A frame nested deeper than max_json_depth: an error frame and a json_depth rejection.
        await bob.send('{"event":"deep","data":' + "[" * 64 + "]" * 64 + "}")
        await carol.close()
    finally:
        await nc.close()
    return [alice, bob]


@pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed (apt-get install prometheus)"
)
async def test_every_dashboard_query_returns_data_from_a_live_cluster(tmp_path: Path) -> None:
    port = free_port_pair()
    dev = await spawn_prism_dev(2, port)
    prometheus: subprocess.Popen[bytes] | None = None
    children: set[int] = set()
    try:
        assert dev.stdout is not None
        words = (await read_until(dev.stdout, "nats pub")).split()
        children = descendants(dev.pid)
        nats_url = next(w for w in words if w.startswith("nats://"))
        notify = urllib.parse.urlsplit(
            next(w for w in words if w.startswith("http") and w.endswith("/metrics"))
        )
        nodes = [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]
        assert f"localhost:{port}/healthz" in " ".join(words)  # the banner names the node metrics URLs
        clients = await load(port, nats_url)

        prometheus, url = await start_prometheus(tmp_path, scrape_config(nodes, notify.netloc))
        queries = [
            (name, title, substitute(expr))
            for name, board in gd.dashboards().items()
            for title, expr in gd.panel_queries(board)
        ]
        assert len(queries) > 30
        missing = dict.fromkeys((name, title, expr) for name, title, expr in queries)

        async def answered() -> bool:
            for key in list(missing):
                query = urllib.parse.urlencode({"query": key[2]})
                answer = await asyncio.to_thread(get_json, f"{url}/api/v1/query?{query}")
                assert answer["status"] == "success", (key, answer)
                if answer["data"]["result"]:
                    del missing[key]
            return not missing

        try:
            await eventually(answered, timeout=45, what="every panel query to return data")
        except AssertionError:
            pytest.fail(f"panel queries without data: {list(missing)}")

        # The dashboard's node variable lists both nodes.
        nodes_query = urllib.parse.urlencode({"match[]": NAMES["ready"]})
        names = await asyncio.to_thread(get_json, f"{url}/api/v1/label/node/values?{nodes_query}")
        assert names["data"] == ["node1", "node2"]
        # The rules loaded and evaluate without error (none fires on a healthy cluster).
        rules = await asyncio.to_thread(get_json, f"{url}/api/v1/rules")
        loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
        assert len(loaded) == sum(len(group) for group in gd.alerts().values())
        assert all(r["health"] != "err" for r in loaded), [r for r in loaded if r["health"] == "err"]

        for client in clients:
            await client.close()
        dev.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(dev.wait(), 30) == 0
        await eventually(lambda: not any(alive(pid) for pid in children), what="every child to exit")
    finally:
        if prometheus is not None:
            await stop(prometheus)
        await kill_process_tree(dev, children)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    assert PROMTOOL is not None
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([PROMTOOL, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr
