"""Commands `checkout` and `watch`: records as files (see localstore.files)."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

import click

from localstore.cli.ids import DATASET_ID

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.cli.context import Context


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--dataset", "dataset_id", type=DATASET_ID, help="Only this dataset (added to the folder's datasets).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def checkout(obj: Context, directory: str, dataset_id: str | None, as_json: bool) -> None:
    """Write records as DIRECTORY/<dataset_id>/<record_id>.json; re-run to refresh.

    Files you edited and `localstore watch` has not queued yet are never overwritten.

    \b
    Example:
      localstore checkout ~/records && localstore watch ~/records
    """
    from localstore.cli.output import emit_json
    from localstore.files import checkout as run_checkout

    report = run_checkout(obj.store, directory, dataset_id)
    if as_json:
        emit_json(report.to_dict())
        return
    for line in report.skipped:
        click.echo(f"skipped {line}", err=True)
    for line in report.kept:
        click.echo(f"kept {line}", err=True)
    click.echo(
        f"checked out {report.records} record(s) into {report.directory}: {report.written} written, "
        f"{report.unchanged} unchanged, {report.removed} removed"
        + (f", {len(report.conflicts_written)} conflict file(s)" if report.conflicts_written else "")
    )


def _client_factory(obj: Context) -> Any:
    from localstore.api import RetryPolicy

    def make() -> Client:
        # a short retry budget: the next tick is the real retry
        return obj.client(retry=RetryPolicy(attempts=3, max_total_seconds=10))

    make().close()  # a missing or malformed key fails now, not at the first tick
    return make


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--sync-every", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Also sync every SECONDS (quiet while the API does not answer).")
@click.option("--grace", type=click.FloatRange(min=0), default=2.0, show_default=True, metavar="SECONDS",
              help="A removed file queues its delete once it stayed away this long (an editor's "
                   "rename-and-rewrite keeps the record).")
@click.pass_obj
def watch(obj: Context, directory: str, sync_every: float | None, grace: float) -> None:
    """Queue edits made to the files under DIRECTORY (made by `checkout`) until Ctrl-C.

    A changed file queues what you changed, merged with what changed in the store since
    the file was written (the same key changed on both sides holds the file, queuing
    nothing); a removed file a delete (after --grace); a new *.json file in a dataset
    folder a create (renamed to its server id after sync). Invalid files are reported as
    path:line:col and queue nothing.

    \b
    Example:
      localstore watch ~/records --sync-every 30
    """
    from localstore.files import watch as run_watch

    factory = _client_factory(obj) if sync_every else None
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_watch(obj.store, directory, client_factory=factory, sync_every=sync_every,
                  stop_event=stop, on_message=click.echo, grace=grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


COMMANDS = [checkout, watch]
