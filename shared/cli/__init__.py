"""The ``prism`` command (:mod:`shared.cli.command`): ``prism <command>`` is ``shared/cli/<command>.py``,
imported only when it runs. ``python -m shared.cli`` is the same command."""

from shared.cli.command import main

__all__ = ["main"]
