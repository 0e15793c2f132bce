"""Installing the peers on demand: Debian's redis-server, npm modules and a virtualenv, in a cache dir.

Everything lands outside the repository (``$PRISM_PEERS_CACHE``, else ``~/.cache/prism-peers``) and is
keyed by a hash of what the repository pins, so a second call is a no-op and a changed pin reinstalls.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOCKETIO_DIR = HERE / "socketio"
CHANNELS_DIR = HERE / "channels"
_SOCKETIO_FILES = ("package.json", "package-lock.json")
_CHANNELS_REQUIREMENTS = CHANNELS_DIR / "requirements.txt"


class PeerInstallError(RuntimeError):
    """A peer could not be installed; the message says which step failed and what it printed."""


def cache_dir() -> Path:
    if override := os.environ.get("PRISM_PEERS_CACHE"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prism-peers"


def _run(args: list[str], what: str, cwd: Path | None = None, timeout: float = 900) -> None:
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerInstallError(f"{what}: {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PeerInstallError(
            f"{what}: {' '.join(args)} exited with {done.returncode} "
            f"(is the package registry reachable from here?)\n{tail}"
        )


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PeerInstallError(f"{' '.join(packages)} missing: install the Debian package(s) as root")
    args = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    try:
        _run(args, f"installing {' '.join(packages)}")
    except PeerInstallError:  # a fresh machine has no package lists yet
        _run(["apt-get", "update", "-q"], "apt-get update")
        _run(args, f"installing {' '.join(packages)}")


def ensure_redis() -> None:
    if shutil.which("redis-server") is None:
        _apt_install("redis-server")


def _digest(paths: list[Path], extra: str = "") -> str:
    sha = hashlib.sha256(extra.encode())
    for path in paths:
        sha.update(path.read_bytes())
    return sha.hexdigest()


def _stamped(directory: Path, digest: str) -> bool:
    stamp = directory / ".installed"
    return stamp.exists() and stamp.read_text().strip() == digest


def socketio_modules() -> Path:
    """``node_modules`` for the Socket.IO peer, installed with ``npm ci`` from the committed lock file."""
    ensure_redis()
    if shutil.which("node") is None or shutil.which("npm") is None:
        _apt_install("nodejs", "npm")
    target = cache_dir() / "socketio"
    sources = [SOCKETIO_DIR / name for name in _SOCKETIO_FILES]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    digest = _digest(sources, node)
    if not _stamped(target, digest):
        target.mkdir(parents=True, exist_ok=True)
        (target / ".installed").unlink(missing_ok=True)
        for source in sources:
            shutil.copyfile(source, target / source.name)
        _run(
            ["npm", "ci", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
            "npm install (socketio peer)",
            cwd=target,
        )
        (target / ".installed").write_text(digest + "\n")
    return target / "node_modules"


def channels_python() -> Path:
    """The Python of the Channels peer's own virtualenv (never the project's), created on first use."""
    ensure_redis()
    target = cache_dir() / "channels"
    venv = target / "venv"
    digest = _digest([_CHANNELS_REQUIREMENTS], sys.version)
    python = venv / "bin" / "python"
    if not _stamped(target, digest):
        target.mkdir(parents=True, exist_ok=True)
        (target / ".installed").unlink(missing_ok=True)
        shutil.rmtree(venv, ignore_errors=True)  # a half-made or outdated venv: start clean
        # The base interpreter, not this venv's: the peer's packages must not see the project's.
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", str(venv)], "creating the channels peer's virtualenv")
        _run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input",
             "-r", str(_CHANNELS_REQUIREMENTS)],
            "pip install (channels peer)",
        )  # fmt: skip
        (target / ".installed").write_text(digest + "\n")
    return python
