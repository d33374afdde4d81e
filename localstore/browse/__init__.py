"""``localstore browse``: the store as a read-only website, served by Datasette.

Datasette (the optional extra ``browse``) opens the file ``mode=ro``: SQLite refuses
every write through it, and in WAL mode it never blocks localstore's own writes, which
show up on the next page load. Only the user-facing tables and views are listed; the
plugin in ``localstore.browse.plugin`` adds the conversation page, record links, search
snippets, conflict snapshots and the property facets.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore.errors import UsageError
from localstore.store.db import connect_readonly

if TYPE_CHECKING:
    from datasette.app import Datasette

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "localstore browse needs Datasette: pip install 'localstore[browse]'"
USER_FACING = ("records", "messages", "changes", "conflicts", "judgements", "datasets", "sync_runs")
SETTINGS: dict[str, Any] = {
    "default_page_size": 50,
    "sql_time_limit_ms": 5000,  # a view's row count over 100,000 records takes a moment
    "facet_time_limit_ms": 3000,
    "suggest_facets": False,  # a suggestion query per column per page: slow on big stores
    "default_cache_ttl": 0,  # the store changes under us: never serve a cached page
    "allow_download": False,
}
MAX_LABEL_KEYS = 4
LABEL_KEY_SAMPLE = 5000

SNIPPET = "snippet(search_fts, 0, '<mark>', '</mark>', '…', 16)"
CANNED_QUERIES: dict[str, dict[str, Any]] = {
    "search": {
        "title": "Full-text search",
        "description": (
            'Messages matching an FTS5 query (words, "a phrase", AND, OR, NOT, prefix*), '
            "best first."
        ),
        "sql": f"""select record_id, role, {SNIPPET} as snippet, idx, dataset_id
from search_fts
where :q != '' and search_fts match :q
order by rank
limit 200""",
    },
    "pending_changes": {
        "title": "Pending changes",
        "description": "Local edits not yet pushed (and rejected ones), oldest first.",
        "sql": """select id, record_id, kind, state, created_at, base_updated_at, error, body
from changes
where state in ('pending', 'in_flight', 'rejected')
order by id""",
    },
    "open_conflicts": {
        "title": "Open conflicts: base, ours, theirs",
        "description": "Each open conflict with the three versions side by side.",
        "sql": """select record_id, parts, base, local as ours, remote as theirs, detected_at
from conflicts
order by detected_at, record_id""",
    },
    "records_by_label": {
        "title": "Records by label",
        "description": "Records whose properties.label is the given label (empty: every record).",
        "sql": """select id as record_id, json_extract(properties, '$.label') as label, sync_state,
       dataset_id, updated_at, properties
from records
where :label = '' or json_extract(properties, '$.label') = :label
order by updated_at desc, id
limit 1000""",
    },
    "judge_answers_by_label": {
        "title": "Judge answers by label",
        "description": "How each judge's latest answers spread over the records' labels.",
        "sql": """select j.judge_name, json_extract(r.properties, '$.label') as label, j.answer,
       count(*) as records
from judgements as j join records as r on r.id = j.record_id
group by j.judge_name, label, j.answer
order by j.judge_name, label, records desc""",
    },
}


def label_keys(conn: sqlite3.Connection) -> list[str]:
    """Property keys people label with: keys holding short text, integers or booleans
    with few distinct values, in a sample of the records (``label`` first)."""
    rows = conn.execute(
        f"""SELECT j.key, count(DISTINCT j.atom) AS n, count(*) AS total
            FROM (SELECT properties FROM records LIMIT {LABEL_KEY_SAMPLE}) AS r,
                 json_each(r.properties) AS j
            WHERE j.type IN ('text', 'integer', 'true', 'false') AND length(j.atom) <= 80
            GROUP BY j.key
            HAVING n <= 30 AND (n < total OR total = 1)
            ORDER BY j.key = 'label' DESC, total DESC, j.key"""
    ).fetchall()
    return [key for key, _, _ in rows][:MAX_LABEL_KEYS]


def metadata_for(path: Path, name: str) -> dict[str, Any]:
    with closing(connect_readonly(path)) as conn:
        objects = conn.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"
        ).fetchall()
        keys = label_keys(conn)
    hidden_tables = sorted(n for n, kind in objects if kind == "table" and n not in USER_FACING)
    hidden_views = sorted(n for n, kind in objects if kind == "view" and n not in USER_FACING)
    tables: dict[str, Any] = {t: {"hidden": True} for t in hidden_tables}
    tables["records"] = {
        "facets": ["sync_state", *({"property": k} for k in keys)],
        "description": "Each record as you see it now: pending edits applied, pending deletes hidden. "
        "Click an id to read the conversation.",
    }
    tables["messages"] = {"facets": ["role"], "description": "One row per message of each record."}
    tables["changes"] = {"facets": ["state", "kind"], "sort_desc": "id"}
    tables["conflicts"] = {"description": "Open conflicts with base, local and remote snapshots."}
    tables["judgements"] = {"facets": ["judge_name", "answer"]}
    return {
        "title": f"localstore: {path.name}",
        "description": "Read-only: change records with the localstore command line.",
        "databases": {name: {"tables": tables, "queries": CANNED_QUERIES}},
        "plugins": {"localstore": {"hidden_views": hidden_views}},
    }


def make_datasette(path: Path) -> Datasette:
    """A Datasette serving the store at ``path`` read-only, with localstore's plugin."""
    try:
        from datasette.app import Datasette
        from datasette.plugins import pm
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    import datasette.handle_exception

    from localstore.browse import plugin

    # Datasette prints every error, a 404 included, as a rich traceback with the local
    # variables of each frame: keep the terminal to real errors, without the locals
    datasette.handle_exception.rich = None
    if not pm.is_registered(plugin):
        pm.register(plugin, name="localstore")
    path = path.resolve()
    name = path.stem
    ds = Datasette(
        files=[str(path)],
        metadata=metadata_for(path, name),
        template_dir=str(HERE / "templates"),
        static_mounts=[("-/localstore", str(HERE / "static"))],
        settings=SETTINGS,
    )
    db = ds.get_database()
    if db.name != name:  # pragma: no cover - a file named like Datasette's own databases
        raise UsageError(f"cannot browse a store named {path.name}: rename the file")
    read = db.connect

    def connect(write: bool = False) -> sqlite3.Connection:
        # Datasette reads through mode=ro already; no plugin gets a writable one either
        if write:
            raise PermissionError("localstore browse is read-only")
        return read(write=False)

    db.connect = connect
    return ds


def bind(host: str, port: int) -> socket.socket:
    """Listen before serving, so --port 0 can say which port it got and a client that
    connects early waits in the backlog instead of being refused."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot serve on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(path: Path, host: str = "127.0.0.1", port: int = 8001, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the store until interrupted. ``on_ready(url)`` is called once listening."""
    ds = make_datasette(path)
    import uvicorn

    os.environ.pop("MISTRAL_API_KEY", None)  # the website needs no key: keep it out of reach
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    if on_ready is not None:
        on_ready(f"http://{shown_host}:{bound_port}/")
    config = uvicorn.Config(ds.app(), log_level="warning", access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
