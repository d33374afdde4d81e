"""Commands `search` (full-text search, localstore.ops.search) and `browse` (the store as a
read-only website, localstore.browse)."""

from __future__ import annotations

import re
import sys

import click

from localstore.cli.context import Context, pass_ctx
from localstore.cli.output import emit_json, json_option

_MARKS = ("\x02", "\x03")  # snippet highlight marks, styled for a terminal
_MARKED = re.compile("\x02(.*?)\x03", re.DOTALL)


@click.command()
@click.argument("query")
@click.option("--dataset", "dataset_id", help="Only this dataset.")
@click.option("--role", help="Only messages of this role (user, assistant, system…).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@json_option
@pass_ctx
def search(ctx: Context, query: str, dataset_id: str | None, role: str | None, limit: int, as_json: bool) -> None:
    """Full-text search of the records' messages, best match first.

    QUERY is FTS5 syntax: words (all must match), "a phrase", AND, OR, NOT, prefix*,
    NEAR(a b). Prints record id, role and a snippet with the matches [marked]. The
    index is the `search_fts` table for `localstore sql`.

    \b
    Examples:
      localstore search refund
      localstore search '"wrong order" NOT refund' --role assistant --limit 50
      localstore search 'escalat*' --json | jq -r '.[].record_id' | sort -u
    """
    from localstore.ops.search import search as run_search

    styled = not as_json and sys.stdout.isatty()
    hits = run_search(
        ctx.store, query, dataset_id=dataset_id, role=role, limit=limit,
        highlight=_MARKS if styled else ("[", "]"),
    )
    if as_json:
        emit_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        click.echo(f"no match for {query!r}")
        return
    for hit in hits:
        snippet = " ".join(hit.snippet.split())
        if styled:
            snippet = _MARKED.sub(lambda m: click.style(m.group(1), fg="yellow", bold=True), snippet)
        click.echo(f"{hit.record_id}\t{hit.role or '-'}\t{snippet}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--open", "open_browser", is_flag=True, help="Open the site in a web browser.")
@pass_ctx
def browse(ctx: Context, host: str, port: int, open_browser: bool) -> None:
    """Serve the store read-only as a website (Datasette): records, conversations,
    search, conflicts. Needs the `browse` extra. Ctrl-C stops it.

    \b
    Examples:
      localstore browse --open
      localstore browse --port 0     # a free port; the address is printed
    """
    from localstore.browse import serve
    from localstore.store.db import Store

    with Store.open(ctx.db) as store:  # creates or migrates it; Datasette reads the file
        from localstore.ops.search import catch_up

        catch_up(store)  # what pulls wrote since the index was last read
        path = store.path
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"localstore: warning: serving on {host}: anyone who can reach it can read the store", err=True)

    def ready(url: str) -> None:
        click.echo(f"serving {path} read-only at {url} (Ctrl-C stops)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    serve(path, host, port, on_ready=ready)


COMMANDS = [search, browse]
