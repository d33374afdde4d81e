"""The Datasette plugin behind ``localstore browse``: a conversation page per record,
links to it from every record id, highlighted search snippets, conflict snapshots side
by side, a facet on property keys, and the guard that keeps the store read-only.

Registered by ``localstore.browse.make_datasette`` (not through an entry point), so it
touches no other Datasette the user runs.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, quote

import markupsafe
from datasette import hookimpl
from datasette.database import QueryInterrupted
from datasette.facets import Facet
from datasette.filters import FilterArguments
from datasette.utils import path_with_added_args, path_with_removed_args
from datasette.utils.asgi import NotFound, Response

from localstore.browse.render import conversation_context, payload_summary

WRITE_ACTIONS = frozenset(
    {"insert-row", "delete-row", "update-row", "create-table", "alter-table", "drop-table",
     "view-database-download"}
)
RECORD_ID_COLUMNS = frozenset({"record_id"})
SNAPSHOT_COLUMNS = frozenset({"base", "ours", "theirs", "local", "remote"})
MARK_OPEN, MARK_CLOSE = "<mark>", "</mark>"
PROPERTY_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
PROPERTY_ARG = "_prop_"  # ?_prop_label=escalated filters records on properties.label


def conversation_path(datasette: Any, record_id: str) -> str:
    return str(datasette.urls.path(f"/-/conversation/{quote(record_id, safe='')}"))


# ------------------------------------------------------------------ cells


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Any:
    if not isinstance(value, str):
        return None
    if column in RECORD_ID_COLUMNS or (column == "id" and table == "records"):
        return markupsafe.Markup('<a class="ls-record" href="{}">{}</a>').format(
            conversation_path(datasette, value), value
        )
    if column == "payload" and table == "records":
        return markupsafe.Markup('<a class="ls-summary" href="{}">{}</a>').format(
            conversation_path(datasette, row["id"]), payload_summary(value)
        )
    if column == "properties" and value.startswith("{"):
        try:
            properties = json.loads(value)
        except ValueError:
            return None
        return markupsafe.Markup(" ").join(
            markupsafe.Markup('<span class="ls-prop"><b>{}</b>=<span>{}</span></span>').format(
                key, item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            )
            for key, item in sorted(properties.items())
        )
    if column == "snippet" and MARK_OPEN in value:
        # everything escaped, then only the marks FTS5 snippet() added turned back on
        escaped = str(markupsafe.escape(value))
        return markupsafe.Markup(
            escaped.replace("&lt;mark&gt;", MARK_OPEN).replace("&lt;/mark&gt;", MARK_CLOSE)
        )
    if column in SNAPSHOT_COLUMNS and table in (None, "conflicts") and value.startswith("{"):
        try:
            shown = json.dumps(json.loads(value), indent=2, ensure_ascii=False, sort_keys=True)
        except ValueError:
            return None
        return markupsafe.Markup('<pre class="ls-snapshot">{}</pre>').format(shown)
    return None


@hookimpl
def extra_css_urls(datasette: Any) -> list[str]:
    return [str(datasette.urls.path("/-/localstore/localstore.css"))]


# ------------------------------------------------------------------ read-only guard


# Internal tables are hidden by metadata; internal views (plugin config "hidden_views",
# see localstore.browse.metadata_for) are refused here. SQL can still read them all.
@hookimpl
def permission_allowed(datasette: Any, actor: Any, action: str, resource: Any) -> bool | None:
    if action in WRITE_ACTIONS:
        return False
    if action == "view-table" and isinstance(resource, tuple | list) and len(resource) == 2:
        hidden_views = (datasette.plugin_config("localstore") or {}).get("hidden_views", ())
        if resource[1] in hidden_views:
            return False
    return None


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@hookimpl
def asgi_wrapper(datasette: Any) -> Any:
    """Every request that is not a read gets 405, before Datasette sees it."""

    def wrap(app: Any) -> Any:
        async def read_only(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] not in READ_METHODS:
                more = True
                while more:  # read the body out, so the connection stays usable
                    message = await receive()
                    more = message.get("type") == "http.request" and message.get("more_body", False)
                await send({
                    "type": "http.response.start", "status": 405,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET, HEAD")],
                })
                await send({"type": "http.response.body", "body": b"localstore browse is read-only\n"})
                return
            await app(scope, receive, send)

        return read_only

    return wrap


# ------------------------------------------------------------------ the conversation page


async def conversation(datasette: Any, request: Any) -> Response:
    record_id = request.url_vars["record_id"]
    db = datasette.get_database()
    context = await db.execute_fn(lambda conn: conversation_context(conn, record_id))
    if context is None:
        raise NotFound(f"record {record_id} is not in the store (or has a pending delete)")
    context.update(
        database=db.name,
        conflicts_url=datasette.urls.path(f"/{quote(db.name)}/open_conflicts"),
        records_url=datasette.urls.table(db.name, "records"),
    )
    html = await datasette.render_template("localstore_conversation.html", context, request=request)
    return Response.html(html)


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [(r"^/-/conversation/(?P<record_id>[^/]+)$", conversation)]


# ------------------------------------------------------------------ properties: facet + filter


class PropertyFacet(Facet):
    """Facet on one key of the `properties` JSON: ``?_facet_property=label``."""

    type = "property"

    async def suggest(self) -> list[dict[str, Any]]:
        return []

    async def facet_results(self) -> tuple[list[dict[str, Any]], list[str]]:
        results: list[dict[str, Any]] = []
        timed_out: list[str] = []
        columns = await self.get_columns(self.sql, self.params)
        if "properties" not in columns:
            return results, timed_out
        qs_pairs = self.get_querystring_pairs()
        size = self.get_facet_size()
        for source_and_config in self.get_configs():
            key = source_and_config["config"].get("simple", "")
            if not PROPERTY_KEY.fullmatch(key):
                continue
            # the key is a literal (PROPERTY_KEY allows no quote): self.params may be a list
            sql = f"""select value, cast(value as text) as arg, count(*) as count from (
                          select json_extract(properties, '$."{key}"') as value from ({self.sql})
                      ) where value is not null
                      group by value order by count desc, value limit {size + 1}"""
            try:
                rows = await self.ds.execute(
                    self.database, sql, self.params,
                    truncate=False, custom_time_limit=self.ds.setting("facet_time_limit_ms"),
                )
            except QueryInterrupted:
                timed_out.append(f"properties.{key}")
                continue
            arg = PROPERTY_ARG + key
            values = []
            for row in rows.rows[:size]:
                selected = (arg, row["arg"]) in qs_pairs
                path = (
                    path_with_removed_args(self.request, {arg: row["arg"]})
                    if selected
                    else path_with_added_args(self.request, {arg: row["arg"]})
                )
                values.append(
                    {
                        "value": row["value"],
                        "label": row["value"],
                        "count": row["count"],
                        "toggle_url": self.ds.absolute_url(self.request, self.ds.urls.path(path)),
                        "selected": selected,
                    }
                )
            results.append(
                {
                    "name": f"properties.{key}",
                    "type": self.type,
                    "hideable": source_and_config["source"] != "metadata",
                    "toggle_url": self.ds.urls.path(
                        path_with_removed_args(self.request, {"_facet_property": key})
                    ),
                    "results": values,
                    "truncated": len(rows) > size,
                }
            )
        return results, timed_out


@hookimpl
def register_facet_classes() -> list[type]:
    return [PropertyFacet]


@hookimpl
def filters_from_request(request: Any, database: str, table: str, datasette: Any) -> FilterArguments | None:
    if table != "records":
        return None
    clauses: list[str] = []
    params: dict[str, str] = {}
    described: list[str] = []
    for n, (name, value) in enumerate(parse_qsl(request.query_string, keep_blank_values=True)):
        key = name[len(PROPERTY_ARG):]
        if not name.startswith(PROPERTY_ARG) or not PROPERTY_KEY.fullmatch(key):
            continue
        clauses.append(f"cast(json_extract(properties, :_ls_p{n}) as text) = :_ls_v{n}")
        params[f"_ls_p{n}"] = f'$."{key}"'
        params[f"_ls_v{n}"] = value
        described.append(f'properties.{key} = "{value}"')
    if not clauses:
        return None
    return FilterArguments(clauses, params=params, human_descriptions=described)
