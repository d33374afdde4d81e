-- localstore: the one DDL of a store file. Executed by localstore.store on a new file;
-- localstore/models.py maps onto these tables and tests/test_schema.py proves they agree.
-- Timestamps are ISO 8601 UTC strings (2026-11-25T18:51:57.123456Z); payload and
-- properties are JSON text, so json_extract(properties, '$.label') works.

PRAGMA user_version = 6;

-- Datasets the store knows; `tracked` ones are pulled by a bare `pull` and by `sync`.
CREATE TABLE datasets (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    slug           TEXT,
    created_at     TEXT,
    updated_at     TEXT,
    tracked        INTEGER NOT NULL DEFAULT 0 CHECK (tracked IN (0, 1)),
    last_pulled_at TEXT
);

-- The mirror: each record as last seen on the server. Only pull, fetch and sync write
-- here; local edits never do. A row with deleted_at set is a tombstone, kept only
-- while a working copy still refers to it. Its id is unique by an index of its own, not
-- a PRIMARY KEY: a large first pull drops that index and builds it once at the end
-- (localstore.sync.mirror_writer), since random ids inserted one by one touch a page of
-- it each and every commit rewrites them all.
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
CREATE UNIQUE INDEX mirror_id ON mirror (id);
CREATE INDEX mirror_by_dataset ON mirror (dataset_id, created_at, id);
-- The few tombstones (kept while a working copy refers to them): counting live records is
-- count(*) less these, not a scan of every row.
CREATE INDEX IF NOT EXISTS mirror_tombstones ON mirror (id) WHERE deleted_at IS NOT NULL;

-- Working copies: one row per record with local work not yet settled with the server.
-- Only localstore.ledger writes here and to `changes`. `payload` / `properties` hold
-- the local value of a part edited locally (NULL: not edited, the record shows the
-- mirror's). Each part has its own base: the remote value the user saw when they
-- edited that part (or deleted the record), and that value's `updated_at` (NULL when
-- not known, e.g. after our own PUT, whose answer carries none). Offline creates
-- (is_create) hold both parts; their base is set when the create is sent.
-- state: 'pending' or 'conflict'.
CREATE TABLE working (
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
CREATE INDEX working_by_dataset ON working (dataset_id);

-- The outbound change log. Pending entries are what sync pushes (at most one pending
-- entry per record and kind: a newer edit supersedes the older one); an entry being
-- sent is in_flight (its ids are captured then); pushed, rejected, superseded and
-- reverted entries stay as history. `sent` is what a push actually sent when it was
-- not `body` (a 3-way merge with a teammate's change).
CREATE TABLE changes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id       TEXT NOT NULL,
    dataset_id      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('create', 'payload', 'properties', 'delete')),
    body            TEXT,
    base_updated_at TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'pushed', 'rejected', 'superseded', 'reverted')),
    error           TEXT,
    created_at      TEXT NOT NULL,
    pushed_at       TEXT,
    sent            TEXT
);
CREATE INDEX changes_by_record ON changes (record_id, state);
CREATE INDEX changes_open ON changes (state) WHERE state IN ('pending', 'in_flight', 'rejected');

-- Offline creates keep their provisional id reachable after the server assigns one.
CREATE TABLE id_map (
    provisional_id TEXT PRIMARY KEY,
    server_id      TEXT NOT NULL UNIQUE,
    mapped_at      TEXT NOT NULL
);

CREATE TABLE sync_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    pushed      INTEGER NOT NULL DEFAULT 0,
    pulled      INTEGER NOT NULL DEFAULT 0,
    conflicts   INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'conflicts', 'failed')),
    message     TEXT
);

-- Every live-judging run ever made; the `judgements` view shows the latest.
CREATE TABLE judgement_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id         TEXT NOT NULL,
    judge_name        TEXT NOT NULL,
    model_name        TEXT NOT NULL,
    answer,                         -- no type: text stays text, numbers stay numbers
    analysis          TEXT NOT NULL,
    judged_at         TEXT NOT NULL,
    record_updated_at TEXT
);
CREATE INDEX judgement_runs_latest ON judgement_runs (record_id, judge_name, id);

-- ---------------------------------------------------------------- the SQL surface

-- Each record as the user sees it now: pending edits applied, pending deletes hidden.
CREATE VIEW records AS
SELECT m.id, m.dataset_id, m.created_at, m.updated_at, m.deleted_at, m.source,
       COALESCE(w.payload, m.payload) AS payload,
       COALESCE(w.properties, m.properties) AS properties,
       COALESCE(w.state, 'synced') AS sync_state
FROM mirror AS m LEFT JOIN working AS w ON w.record_id = m.id
WHERE (w.record_id IS NULL AND m.deleted_at IS NULL)
   OR (w.record_id IS NOT NULL AND NOT (w.deleted = 1 AND w.state = 'pending'))
UNION ALL
SELECT w.record_id, w.dataset_id, w.created_at, NULL, NULL, 'DIRECT_INPUT',
       w.payload, w.properties, w.state
FROM working AS w
WHERE w.is_create = 1 AND w.deleted = 0;

-- Each record as last seen on the server.
CREATE VIEW remote_records AS
SELECT id, dataset_id, created_at, updated_at, deleted_at, source, payload, properties
FROM mirror WHERE deleted_at IS NULL;

-- One row per entry of payload.messages of each record in `records`. Built on the tables
-- rather than on `records` so that SQLite parses each payload once (a message is an
-- array element: fullkey '$.messages[N]'); records with a working copy take its payload.
CREATE VIEW messages AS
SELECT m.id AS record_id, m.dataset_id, CAST(j.key AS INTEGER) AS idx,
       json_extract(j.value, '$.role') AS role, json_extract(j.value, '$.content') AS content
FROM mirror AS m, json_each(m.payload, '$.messages') AS j
WHERE m.deleted_at IS NULL AND j.fullkey LIKE '$.messages[%'
  AND NOT EXISTS (SELECT 1 FROM working AS w WHERE w.record_id = m.id)
UNION ALL
SELECT w.record_id, w.dataset_id, CAST(j.key AS INTEGER),
       json_extract(j.value, '$.role'), json_extract(j.value, '$.content')
FROM working AS w LEFT JOIN mirror AS m ON m.id = w.record_id,
     json_each(COALESCE(w.payload, m.payload), '$.messages') AS j
WHERE j.fullkey LIKE '$.messages[%'
  AND ((w.is_create = 1 AND w.deleted = 0)
       OR (w.is_create = 0 AND m.id IS NOT NULL AND NOT (w.deleted = 1 AND w.state = 'pending')));

-- Open conflicts with their three snapshots (remote is NULL when deleted remotely).
-- `parts` names the conflicting parts as JSON Pointers ("/payload", "/properties/label")
-- or "delete-vs-edit" / "edit-vs-delete".
CREATE VIEW conflicts AS
SELECT w.record_id, w.dataset_id, w.conflict_parts AS parts,
       json_object('payload', json(w.base_payload), 'properties', json(w.base_properties),
                   'updated_at', COALESCE(w.base_properties_at, w.base_payload_at)) AS base,
       CASE WHEN w.deleted = 1 THEN NULL ELSE
           json_object('payload', json(COALESCE(w.payload, m.payload, w.base_payload)),
                       'properties', json(COALESCE(w.properties, m.properties, w.base_properties))) END AS local,
       CASE WHEN m.id IS NULL OR m.deleted_at IS NOT NULL THEN NULL ELSE
           json_object('payload', json(m.payload), 'properties', json(m.properties),
                       'updated_at', m.updated_at) END AS remote,
       w.detected_at
FROM working AS w LEFT JOIN mirror AS m ON m.id = w.record_id
WHERE w.state = 'conflict';

-- The latest verdict per record and judge.
CREATE VIEW judgements AS
SELECT j.record_id, j.judge_name, j.model_name, j.answer, j.analysis, j.judged_at,
       j.record_updated_at
FROM judgement_runs AS j
WHERE j.id = (SELECT MAX(k.id) FROM judgement_runs AS k
              WHERE k.record_id = j.record_id AND k.judge_name = j.judge_name);

-- ================================================================ full-text search
-- An FTS5 index over the text of every record in `records`, kept in step by triggers on
-- `mirror` and `working`: whatever changes those tables (pull, edits, SQL writes,
-- resolve, revert, sync) keeps the index true in the same transaction.
-- localstore/search_schema.py (FTS_MIGRATION) builds these same objects for a store made
-- before this section existed, and fills them: change the two together.

-- The text of each record in `records`: one row per entry of payload.messages (idx, role
-- and content: a string, or the strings and `text` fields of a list of parts) or, for a
-- payload whose `messages` is not a list, one row (idx and role NULL) holding every
-- string in the payload, one per line.
CREATE VIEW search_source AS
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
FROM records AS r, json_each(r.payload, '$.messages') AS j
WHERE j.fullkey LIKE '$.messages[%'
UNION ALL
SELECT r.id, r.dataset_id, NULL, NULL,
       (SELECT group_concat(t.value, char(10)) FROM json_tree(r.payload) AS t WHERE t.type = 'text')
FROM records AS r
WHERE json_type(r.payload, '$.messages') IS NOT 'array';

-- 1 while a pull writes a batch of records: the mirror's triggers stand aside, and the
-- pull lists the records whose text changed in search_dirty instead (cheap). Every
-- reader of the index (search, `sql` on search_*, browse) first brings those up to date
-- (localstore.search.catch_up), in bulk: a pull of thousands of records does not pay
-- for indexing them one trigger at a time, and a search never sees a stale index.
CREATE TABLE search_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    deferred INTEGER NOT NULL DEFAULT 0 CHECK (deferred IN (0, 1))
);
INSERT INTO search_state (id) VALUES (1);
CREATE TABLE search_dirty (record_id TEXT PRIMARY KEY);
-- A dataset's first pull marks the whole dataset instead of listing each record (a
-- million random keys cost that pull more than its records did): readers index it in
-- (created_at, id) order, from the last one they indexed.
CREATE TABLE search_stale (
    dataset_id       TEXT PRIMARY KEY,
    after_created_at TEXT NOT NULL DEFAULT '',
    after_id         TEXT NOT NULL DEFAULT ''
);

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

-- Recompute a record's rows whenever what `records` shows of it may have changed. A
-- change that cannot change its text (a pull re-listing an unchanged record, a working
-- copy that only edits properties) costs nothing.
CREATE TRIGGER search_mirror_insert AFTER INSERT ON mirror
WHEN (SELECT deferred FROM search_state) = 0
BEGIN
    INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
    SELECT 'delete', id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id = new.id;
    DELETE FROM search_docs WHERE record_id = new.id;
    INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
    SELECT record_id, dataset_id, idx, role, content FROM search_source
    WHERE record_id = new.id AND content != '';
    INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
    SELECT id, content, record_id, dataset_id, idx, role FROM search_docs WHERE record_id = new.id;
END;
CREATE TRIGGER search_mirror_update AFTER UPDATE OF id, dataset_id, deleted_at, payload ON mirror
WHEN (SELECT deferred FROM search_state) = 0
  AND (old.payload IS NOT new.payload OR old.id IS NOT new.id OR old.dataset_id IS NOT new.dataset_id
       OR (old.deleted_at IS NULL) IS NOT (new.deleted_at IS NULL))
BEGIN
    INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
    SELECT 'delete', id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id IN (old.id, new.id);
    DELETE FROM search_docs WHERE record_id IN (old.id, new.id);
    INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
    SELECT record_id, dataset_id, idx, role, content FROM search_source
    WHERE record_id IN (old.id, new.id) AND content != '';
    INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
    SELECT id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id IN (old.id, new.id);
END;
CREATE TRIGGER search_mirror_delete AFTER DELETE ON mirror BEGIN
    INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
    SELECT 'delete', id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id = old.id;
    DELETE FROM search_docs WHERE record_id = old.id;
    INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
    SELECT record_id, dataset_id, idx, role, content FROM search_source
    WHERE record_id = old.id AND content != '';
    INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
    SELECT id, content, record_id, dataset_id, idx, role FROM search_docs WHERE record_id = old.id;
END;
CREATE TRIGGER search_working_insert AFTER INSERT ON working
WHEN new.payload IS NOT NULL OR new.deleted = 1 OR new.is_create = 1
  OR NOT EXISTS (SELECT 1 FROM mirror WHERE id = new.record_id AND deleted_at IS NULL)
BEGIN
    INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
    SELECT 'delete', id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id = new.record_id;
    DELETE FROM search_docs WHERE record_id = new.record_id;
    INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
    SELECT record_id, dataset_id, idx, role, content FROM search_source
    WHERE record_id = new.record_id AND content != '';
    INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
    SELECT id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id = new.record_id;
END;
CREATE TRIGGER search_working_update
AFTER UPDATE OF record_id, dataset_id, payload, deleted, is_create, state ON working
WHEN old.payload IS NOT new.payload OR old.record_id IS NOT new.record_id
  OR old.dataset_id IS NOT new.dataset_id OR old.deleted IS NOT new.deleted
  OR old.is_create IS NOT new.is_create OR old.state IS NOT new.state
BEGIN
    INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
    SELECT 'delete', id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id IN (old.record_id, new.record_id);
    DELETE FROM search_docs WHERE record_id IN (old.record_id, new.record_id);
    INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
    SELECT record_id, dataset_id, idx, role, content FROM search_source
    WHERE record_id IN (old.record_id, new.record_id) AND content != '';
    INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
    SELECT id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id IN (old.record_id, new.record_id);
END;
CREATE TRIGGER search_working_delete AFTER DELETE ON working
WHEN old.payload IS NOT NULL OR old.deleted = 1 OR old.is_create = 1
  OR NOT EXISTS (SELECT 1 FROM mirror WHERE id = old.record_id AND deleted_at IS NULL)
BEGIN
    INSERT INTO search_fts (search_fts, rowid, content, record_id, dataset_id, idx, role)
    SELECT 'delete', id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id = old.record_id;
    DELETE FROM search_docs WHERE record_id = old.record_id;
    INSERT INTO search_docs (record_id, dataset_id, idx, role, content)
    SELECT record_id, dataset_id, idx, role, content FROM search_source
    WHERE record_id = old.record_id AND content != '';
    INSERT INTO search_fts (rowid, content, record_id, dataset_id, idx, role)
    SELECT id, content, record_id, dataset_id, idx, role FROM search_docs
    WHERE record_id = old.record_id;
END;

-- ---------------------------------------------------------------- writing with SQL
-- `localstore sql --write` creates these on its own connection (TEMP: they are never in
-- the file). A write to the `records` view becomes rows of temp.sql_writes, which
-- localstore.sqlwrite hands to the change log's owner (localstore.ledger_bulk) before
-- the statement's transaction commits: the same queued changes as add/edit/set/rm.
-- Another SQLite client (the sqlite3 shell, Datasette) sees no trigger, so its write to
-- `records` fails with SQLite's "cannot modify records because it is a view" rather
-- than landing in a scratch table that nothing would ever apply.
CREATE TEMP TABLE IF NOT EXISTS sql_writes (
    seq            INTEGER PRIMARY KEY,
    op             TEXT NOT NULL,          -- 'insert', 'update' or 'delete'
    record_id      TEXT,                   -- update, delete: the record (OLD.id)
    dataset_id,                            -- insert: NEW.dataset_id
    payload_set    INTEGER NOT NULL DEFAULT 0,  -- the statement gives a new payload …
    payload,                               -- … this one (any type: checked by the owner)
    properties_set INTEGER NOT NULL DEFAULT 0,
    properties,
    fixed          TEXT NOT NULL DEFAULT '' -- read-only columns the row changes (update) or gives (insert)
);

CREATE TEMP TRIGGER IF NOT EXISTS records_sql_insert INSTEAD OF INSERT ON main.records
BEGIN
    INSERT INTO sql_writes (op, dataset_id, payload_set, payload, properties_set, properties, fixed)
    VALUES ('insert', NEW.dataset_id, 1, NEW.payload, NEW.properties IS NOT NULL, NEW.properties,
            substr(CASE WHEN NEW.id IS NOT NULL THEN ', id' ELSE '' END
                || CASE WHEN NEW.created_at IS NOT NULL THEN ', created_at' ELSE '' END
                || CASE WHEN NEW.updated_at IS NOT NULL THEN ', updated_at' ELSE '' END
                || CASE WHEN NEW.deleted_at IS NOT NULL THEN ', deleted_at' ELSE '' END
                || CASE WHEN NEW.source IS NOT NULL THEN ', source' ELSE '' END
                || CASE WHEN NEW.sync_state IS NOT NULL THEN ', sync_state' ELSE '' END, 3));
END;

CREATE TEMP TRIGGER IF NOT EXISTS records_sql_update INSTEAD OF UPDATE ON main.records
BEGIN
    INSERT INTO sql_writes (op, record_id, payload_set, payload, properties_set, properties, fixed)
    VALUES ('update', OLD.id,
            NEW.payload IS NOT OLD.payload, CASE WHEN NEW.payload IS NOT OLD.payload THEN NEW.payload END,
            NEW.properties IS NOT OLD.properties,
            CASE WHEN NEW.properties IS NOT OLD.properties THEN NEW.properties END,
            substr(CASE WHEN NEW.id IS NOT OLD.id THEN ', id' ELSE '' END
                || CASE WHEN NEW.dataset_id IS NOT OLD.dataset_id THEN ', dataset_id' ELSE '' END
                || CASE WHEN NEW.created_at IS NOT OLD.created_at THEN ', created_at' ELSE '' END
                || CASE WHEN NEW.updated_at IS NOT OLD.updated_at THEN ', updated_at' ELSE '' END
                || CASE WHEN NEW.deleted_at IS NOT OLD.deleted_at THEN ', deleted_at' ELSE '' END
                || CASE WHEN NEW.source IS NOT OLD.source THEN ', source' ELSE '' END
                || CASE WHEN NEW.sync_state IS NOT OLD.sync_state THEN ', sync_state' ELSE '' END, 3));
END;

CREATE TEMP TRIGGER IF NOT EXISTS records_sql_delete INSTEAD OF DELETE ON main.records
BEGIN
    INSERT INTO sql_writes (op, record_id) VALUES ('delete', OLD.id);
END;
