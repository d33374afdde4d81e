"""`emulator` and `demo`: the bundled API emulator (the `emulator` extra: FastAPI, uvicorn)."""

from __future__ import annotations

from types import ModuleType

import click

from localstore.errors import UsageError

INSTALL_HINT = "pip install 'localstore[emulator]'"


def need_emulator(command: str) -> ModuleType:
    """The emulator package, or a one-line error saying what to install when its
    dependencies (FastAPI, uvicorn: the ``emulator`` extra) are missing."""
    try:
        import localstore_emulator
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("localstore"):
            raise
        raise UsageError(f"localstore {command} needs the emulator extra: {INSTALL_HINT}") from None
    return localstore_emulator


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--db", "emulator_db", type=click.Path(dir_okay=False), help="Persist the emulator's data in this SQLite file.")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed-records", default=0, show_default=True, type=click.IntRange(0), help="Create a dataset of N generated records at start.")
@click.option("--timestamp-format", default="ms", show_default=True, type=click.Choice(["ms", "us", "offset"]), help="How stamps are written: 2025-10-07T20:56:01.974Z, ….974123Z or ….974123+00:00.")
def emulator(host: str, port: int, emulator_db: str | None, latency_ms: float, fail_rate: float, seed_records: int, timestamp_format: str) -> None:
    """Run the bundled API emulator (for demos and tests; any bearer key is accepted).

    \b
    Example:
      localstore emulator --seed-records 1000 &
      MISTRAL_API_KEY=any localstore --server-url http://127.0.0.1:8000 datasets --remote
    """
    emulator_package = need_emulator("emulator")
    try:
        emulator_package.serve(host, port, emulator_db, latency_ms, fail_rate, seed_records, timestamp_format=timestamp_format)
    except emulator_package.RefusedHost as exc:
        raise UsageError(str(exc)) from None


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo's store afterwards (its path is printed).")
@click.pass_context
def demo(click_ctx: click.Context, keep: bool) -> None:
    """The whole loop on an embedded emulator: no key, no network.

    It works in a fresh store in a temporary folder and never opens yours: --db and
    LOCALSTORE_DB are ignored.

    \b
    Example:
      localstore demo
    """
    need_emulator("demo")
    from localstore.cli.demo import run_demo

    root = click_ctx.find_root()
    if root.params.get("db"):
        source = root.get_parameter_source("db")
        given = "LOCALSTORE_DB" if source == click.core.ParameterSource.ENVIRONMENT else "--db"
        click.echo(f"localstore: the demo ignores {given} ({root.params['db']}): your store is not touched", err=True)
    run_demo(keep=keep)


COMMANDS = [emulator, demo]
