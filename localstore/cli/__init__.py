"""The command line (``localstore …``): ``main`` is the entry point.

``app`` holds the group and the error handling, ``context`` what every command shares,
and one module per topic its commands: ``mirror`` (pull, records, show, sql …),
``edit`` (set, rm, add …), ``sync`` (status, sync, conflicts, resolve …), ``bulk``
(export, import), ``files`` (checkout, watch), ``judge``, ``browse`` (search,
browse), ``emulator`` (emulator, demo). ``output``, ``render`` and ``report`` print.
"""

import sys
from typing import Any


class _WithoutHttpxCommandLine:
    """httpx imports its own command line (click, rich, pygments: ~35 ms of every
    networked command's start-up) unless that import fails; localstore never runs it."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "httpx._main":
            raise ModuleNotFoundError("localstore leaves out the httpx command line", name=name)


sys.meta_path.insert(0, _WithoutHttpxCommandLine())

from localstore.cli import browse, bulk, edit, emulator, files, judge, mirror, sync  # noqa: E402
from localstore.cli.app import cli, main  # noqa: E402

for _topic in (mirror, edit, sync, bulk, files, judge, browse, emulator):
    for _command in _topic.COMMANDS:
        cli.add_command(_command)

__all__ = ["cli", "main"]
