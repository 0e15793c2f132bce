"""``python -m loadtest.peers install [NAME...]``: install the opt-in peers ahead of a benchmark run."""

from __future__ import annotations

import sys
import time

from loadtest.peers import PEERS, install
from loadtest.peers.provision import PeerInstallError


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "install" or any(name not in PEERS for name in argv[1:]):
        print(f"usage: python -m loadtest.peers install [{'|'.join(PEERS)}]...", file=sys.stderr)
        return 2
    for name in argv[1:] or list(PEERS):
        start = time.perf_counter()
        try:
            install(name)
        except PeerInstallError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: installed ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
