"""The README as a new user reads it: it opens with the two commands, says what its test command skips,
and its Python snippets are programs that run and print what their comments say they print.

Each snippet runs as a subprocess against a real nats-server and a real gateway node (``node1``), with the
README's addresses and conn id replaced by the test's."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.client import PrismClient
from shared.demo_backend import DemoBackend, DemoConfig
from tests.conftest import NodeFactory, ws_url
from tests.helpers import kill_process_tree

README = Path(__file__).resolve().parents[2] / "README.md"
README_CONN = "node1.Xq3v9LkPa0Zc"  # the sample conn id the README uses


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def snippet_with(needle: str) -> str:
    (snippet,) = [s for s in python_snippets() if needle in s]
    return snippet


def shows(snippet: str, code: str, printed: str) -> bool:
    """Whether the comment on the line holding ``code`` starts with ``printed`` (then maybe ': why')."""
    line = next(line for line in snippet.splitlines() if code in line)
    comment = line.split("  # ", 1)[1]
    return comment == printed or comment.startswith(printed + ": ")


def test_the_readme_opens_with_its_two_commands_and_says_what_the_test_command_skips() -> None:
    text = README.read_text()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/prism dev\n"
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest\n"
    )
    assert "```" not in text.split("```sh\n", 1)[0]  # nothing to run before them
    opening = text.split("## A tour", 1)[0]
    assert "whole test suite" not in opening
    for needed in ("Chromium", "Prometheus", "Node.js"):
        assert needed in opening
    assert "skipped" in opening
    assert "`.ci/run`" in opening


def test_every_python_snippet_is_a_whole_program_without_top_level_await() -> None:
    snippets = python_snippets()
    assert len(snippets) >= 2
    for snippet in snippets:
        compile(snippet, "README.md", "exec")  # top-level await is a SyntaxError here
        assert "asyncio.run(main())" in snippet


async def run_python(code: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=README.parent,
    )  # fmt: skip


async def test_the_backend_snippet_prints_the_receipts_its_comment_shows(
    make_node: NodeFactory, nats_server: Any
) -> None:
    node = await make_node(node_id="node1")
    snippet = snippet_with("prism.deliver(")
    async with await PrismClient.connect(ws_url(node), user="alice") as alice:
        await alice.join("lobby")
        code = snippet.replace("nats://127.0.0.1:4222", nats_server.url).replace(README_CONN, alice.conn_id)
        proc = await run_python(code)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        printed = out.decode().strip()
        assert shows(snippet, "prism.deliver(", printed), printed
        received = [await alice.receive(5) for _ in range(4)]
        assert received == [
            "just this connection",
            '{"kind":"ping"}',
            "everyone in the lobby",
            "with receipts",
        ]


async def test_the_client_snippet_prints_the_echo_its_comment_shows(
    make_node: NodeFactory, nats_server: Any
) -> None:
    node = await make_node(node_id="node1")
    demo = DemoBackend(DemoConfig(nats_url=nats_server.url))  # what prism dev runs
    await demo.start()
    snippet = snippet_with("PrismClient.connect(")
    urls = re.findall(r'"(ws://localhost:\d+/ws)"', snippet)
    assert urls
    code = snippet
    for url in urls:  # every node of the README is this test's one node
        code = code.replace(url, ws_url(node))
    proc = await run_python(code)  # it prints the reply, then every delivery until it is stopped
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if not first:
            assert proc.stderr is not None
            pytest.fail(f"the snippet printed nothing: {(await proc.stderr.read()).decode()}")
        assert shows(snippet, 'request("echo"', first.strip()), first
    finally:
        await kill_process_tree(proc)
        await demo.stop()
