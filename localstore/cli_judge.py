"""Command `judge`: live judging of records (see localstore.judge)."""

from __future__ import annotations

import click


@click.command()
@click.argument("record_ids", nargs=-1)
def judge(record_ids: tuple[str, ...]) -> None:
    """Run a judge on records (issue #5: not built yet)."""
    raise click.ClickException("judge is not built yet (issue #5)")
