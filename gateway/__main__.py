"""``python -m gateway [flags]``: the same as ``prism gateway [flags]``."""

import sys

from shared.cli.command import main

raise SystemExit(main(["gateway", *sys.argv[1:]]))
