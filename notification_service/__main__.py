"""``python -m notification_service [flags]``: the same as ``prism notify [flags]``."""

import sys

from gateway.cli import main

raise SystemExit(main(["notify", *sys.argv[1:]]))
