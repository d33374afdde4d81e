"""The schema's versions: ``SCHEMA_VERSION`` and the ``MIGRATIONS`` from each older one.

The full-text search index (2 -> 3), for a store made before it existed: the tables of the
"full-text search" section of schema.sql, filled from what the store holds.

This is a migration: it stays as it is once released, even when schema.sql moves on.
The view and the triggers that keep the index in step are derived objects, which the
store makes anew from schema.sql after every migration; this one reads a copy of that
view as it was (a temporary view) to fill the index.
Filling search_docs with one statement and then rebuilding search_fts is faster than
letting the triggers index record by record.
"""

from __future__ import annotations

FTS_MIGRATION = """
-- what schema.sql's search_source view selected when this migration was written
CREATE TEMP VIEW fts_source AS
SELECT r.id AS record_id, r.dataset_id, j.key AS idx,
       CASE j.type WHEN 'object' THEN json_extract(j.value, '$.role') END AS role,
       CASE j.type WHEN 'object' THEN
           CASE json_type(j.value, '$.content')
               WHEN 'text' THEN json_extract(j.value, '$.content')
               WHEN 'array' THEN (
                   SELECT group_concat(
                              CASE p.type WHEN 'text' THEN p.value ELSE json_extract(p.value, '$.text') END,
                              char(10))
                   FROM json_each(j.value, '$.content') AS p
                   WHERE CASE p.type WHEN 'text' THEN 1
                                     WHEN 'object' THEN json_type(p.value, '$.text') = 'text' END)
           END
       END AS content
FROM main.records AS r, json_each(r.payload, '$.messages') AS j
WHERE j.fullkey LIKE '$.messages[%'
UNION ALL
SELECT r.id, r.dataset_id, NULL, NULL,
       (SELECT group_concat(t.value, char(10)) FROM json_tree(r.payload) AS t WHERE t.type = 'text')
FROM main.records AS r
WHERE json_type(r.payload, '$.messages') IS NOT 'array';

CREATE TABLE search_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    deferred INTEGER NOT NULL DEFAULT 0 CHECK (deferred IN (0, 1))
);
INSERT INTO search_state (id) VALUES (1);
CREATE TABLE search_dirty (record_id TEXT PRIMARY KEY);

-- What is indexed: the rows of search_source that hold text, as of the last change.
CREATE TABLE search_docs (
    id         INTEGER PRIMARY KEY,
    record_id  TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    idx        INTEGER,
    role       TEXT,
    content    TEXT NOT NULL
);
CREATE INDEX search_docs_by_record ON search_docs (record_id);

-- The index to query (its content is search_docs):
--   SELECT record_id, role, snippet(search_fts, 0, '[', ']', '…', 12) FROM search_fts
--   WHERE search_fts MATCH 'refund' ORDER BY rank
CREATE VIRTUAL TABLE search_fts USING fts5(
    content, record_id UNINDEXED, dataset_id UNINDEXED, idx UNINDEXED, role UNINDEXED,
    content = 'search_docs', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
);

INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
SELECT record_id, dataset_id, idx, role, content FROM temp.fts_source WHERE content != '';
INSERT INTO search_fts (search_fts) VALUES ('rebuild');
DROP VIEW temp.fts_source;
"""

SCHEMA_VERSION = 6

# Migrations from version N to N+1, applied in order inside one transaction each. They
# change tables; views and triggers are derived and made anew from schema.sql after
# each one (a migration that rebuilds a table drops the views that read it first).
MIGRATIONS: dict[int, str] = {
    # 1 -> 2: a base per part (payload, properties) instead of one per record; what a
    # merged push actually sent; conflict parts named by JSON Pointer.
    1: """
DROP VIEW IF EXISTS records;
DROP VIEW IF EXISTS messages;
DROP VIEW IF EXISTS conflicts;
CREATE TABLE working_v2 (
    record_id          TEXT PRIMARY KEY,
    dataset_id         TEXT NOT NULL REFERENCES datasets (id),
    payload            TEXT CHECK (payload IS NULL OR json_type(payload) = 'object'),
    properties         TEXT CHECK (properties IS NULL OR json_type(properties) = 'object'),
    deleted            INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    is_create          INTEGER NOT NULL DEFAULT 0 CHECK (is_create IN (0, 1)),
    base_payload       TEXT,
    base_payload_at    TEXT,
    base_properties    TEXT,
    base_properties_at TEXT,
    state              TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'conflict')),
    conflict_parts     TEXT,
    detected_at        TEXT,
    created_at         TEXT NOT NULL,
    CHECK (is_create = 0 OR (payload IS NOT NULL AND properties IS NOT NULL)),
    CHECK (is_create = 1 OR (base_payload IS NOT NULL AND base_properties IS NOT NULL))
);
INSERT INTO working_v2
SELECT record_id, dataset_id, payload, properties, deleted, is_create,
       base_payload, base_updated_at, base_properties, base_updated_at, state,
       (SELECT json_group_array(CASE
                  WHEN p.value = 'payload' THEN '/payload'
                  WHEN p.value LIKE 'properties.%'
                  THEN '/properties/' || replace(replace(substr(p.value, 12), '~', '~0'), '/', '~1')
                  ELSE p.value END)
        FROM json_each(working.conflict_parts) AS p),
       detected_at, created_at
FROM working;
DROP TABLE working;
ALTER TABLE working_v2 RENAME TO working;
CREATE INDEX working_by_dataset ON working (dataset_id);
ALTER TABLE changes ADD COLUMN sent TEXT;
""",
    # 2 -> 3: the full-text search index (localstore.store.migrations)
    2: FTS_MIGRATION,
    # 3 -> 4: an index of the tombstones, so `status` counts live records without a scan
    3: "CREATE INDEX IF NOT EXISTS mirror_tombstones ON mirror (id) WHERE deleted_at IS NOT NULL;",
    # 4 -> 5: a dataset's first pull marks the dataset for the full-text index, not each record
    4: """
CREATE TABLE IF NOT EXISTS search_stale (
    dataset_id       TEXT PRIMARY KEY,
    after_created_at TEXT NOT NULL DEFAULT '',
    after_id         TEXT NOT NULL DEFAULT ''
);
""",
    # 5 -> 6: the mirror's id unique by an index of its own (a large first pull drops it
    # and builds it at the end), not by a PRIMARY KEY, whose index cannot be dropped.
    # Copied aside and back, not renamed: the table's text stays schema.sql's.
    5: """
CREATE TABLE mirror_v5 AS SELECT * FROM mirror;
DROP TABLE mirror;
CREATE TABLE mirror (
    id         TEXT NOT NULL,
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    source     TEXT NOT NULL,
    payload    TEXT NOT NULL CHECK (json_type(payload) = 'object'),
    properties TEXT NOT NULL CHECK (json_type(properties) = 'object')
);
INSERT INTO mirror SELECT * FROM mirror_v5 ORDER BY id;
DROP TABLE mirror_v5;
CREATE UNIQUE INDEX mirror_id ON mirror (id);
CREATE INDEX mirror_by_dataset ON mirror (dataset_id, created_at, id);
CREATE INDEX mirror_tombstones ON mirror (id) WHERE deleted_at IS NOT NULL;
""",
}
