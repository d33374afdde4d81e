"""Commands `checkout` and `watch`: records as files (see localstore.files)."""

from __future__ import annotations

import click


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
def checkout(directory: str) -> None:
    """Write records as JSON files under DIRECTORY (issue #4: not built yet)."""
    raise click.ClickException("checkout is not built yet (issue #4)")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False))
def watch(directory: str) -> None:
    """Queue edits made to the files under DIRECTORY (issue #4: not built yet)."""
    raise click.ClickException("watch is not built yet (issue #4)")
