"""The `localstore` group and the entry point: user errors print one line and exit
non-zero, never a traceback. The commands live in the modules beside this one (by
topic) and are added to the group by ``localstore.cli``; those that do not talk to the
network import neither httpx nor FastAPI."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import TYPE_CHECKING

import click

from localstore.errors import LocalstoreError
from localstore.version import __version__

if TYPE_CHECKING:
    pass


from localstore.cli.context import Context, running_as_program


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
    epilog="Ids can be shortened to a unique prefix of 4+ characters. "
    "`localstore COMMAND --help` shows a command's options and an example.",
)
@click.option("--db", envvar="LOCALSTORE_DB", type=click.Path(dir_okay=False), help="Store file [env LOCALSTORE_DB; default: in the user data dir].")
@click.option("--server-url", envvar="LOCALSTORE_SERVER_URL", help="API server [env LOCALSTORE_SERVER_URL; default https://api.mistral.ai].")
@click.version_option(__version__, prog_name="localstore")
@click.pass_context
def cli(ctx: click.Context, db: str | None, server_url: str | None) -> None:
    """Keep Mistral observability dataset records in a local SQLite file: read, query
    and edit them offline, then sync. The API key comes from MISTRAL_API_KEY.

    \b
    Start with:
      localstore demo               the whole loop on a built-in emulator, no key
      localstore pull DATASET_ID    mirror a dataset (`datasets --remote` lists them)
      localstore records            the records you hold; then show ID, set, sync
    """
    ctx.obj = Context(db, server_url)
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:  # a bare `localstore`: the help, and success
        click.echo(ctx.get_help())
        ctx.exit(0)


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors print one line and exit non-zero, never a traceback."""
    running_as_program()
    try:
        code = cli.main(args=argv, prog_name="localstore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort as exc:  # click turns Ctrl-C into Abort
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        click.echo(f"localstore: {'interrupted' if interrupted else 'aborted'}", err=True)
        code = 130 if interrupted else 1
    except click.UsageError as exc:  # bad arguments: click's usage text, exit 2
        exc.show()
        code = exc.exit_code
    except click.ClickException as exc:  # e.g. the $EDITOR failed to start
        click.echo(f"localstore: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except LocalstoreError as exc:
        click.echo(f"localstore: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("localstore: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        code = 1
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("LOCALSTORE_DEBUG"):
            raise
        click.echo(
            f"localstore: internal error: {type(exc).__name__}: {exc} (LOCALSTORE_DEBUG=1 shows the traceback)",
            err=True,
        )
        code = 1
    if code == 130:
        _leave_abandoned_requests()
    sys.exit(code if isinstance(code, int) else 0)


def _leave_abandoned_requests() -> None:
    """After Ctrl-C, threads may still be blocked in requests that were abandoned; Python
    would wait for them at exit. The store is closed by now (a kill is safe for SQLite
    at any moment anyway): flush what was printed and exit at once."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(130)
