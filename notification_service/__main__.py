"""``python -m notification_service [flags]``: the same as ``prism notify [flags]``."""

import sys

from shared.cli.command import main

raise SystemExit(main(["notify", *sys.argv[1:]]))
