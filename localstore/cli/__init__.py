"""The command line (``localstore …``): ``main`` is the entry point.

``app`` holds the group and the error handling, ``context`` what every command shares,
and one module per topic its commands: ``mirror`` (pull, records, show, sql …),
``edit`` (set, rm, add …), ``sync`` (status, sync, conflicts, resolve …), ``bulk``
(export, import), ``files`` (checkout, watch), ``judge``, ``browse`` (search,
browse), ``emulator`` (emulator, demo). ``output``, ``render`` and ``report`` print.
"""

from localstore.cli import browse, bulk, edit, emulator, files, judge, mirror, sync
from localstore.cli.app import cli, main

for _topic in (mirror, edit, sync, bulk, files, judge, browse, emulator):
    for _command in _topic.COMMANDS:
        cli.add_command(_command)

__all__ = ["cli", "main"]
