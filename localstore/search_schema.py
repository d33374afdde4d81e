"""The full-text search index for a store made before it existed: the objects of the
"full-text search" section of schema.sql, filled from what the store holds.

This is a migration: it stays as it is once released, even when schema.sql moves on.
Filling search_docs with one statement and then rebuilding search_fts is faster than
letting the triggers index record by record, so the triggers come last.
"""

from __future__ import annotations

FTS_MIGRATION = """
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
SELECT record_id, dataset_id, idx, role, content FROM search_source WHERE content != '';
INSERT INTO search_fts (search_fts) VALUES ('rebuild');

-- Recompute a record's rows whenever what `records` shows of it may have changed. A
-- change that cannot change its text (a pull re-listing an unchanged record, a working
-- copy that only edits properties) costs nothing.
CREATE TRIGGER search_mirror_insert AFTER INSERT ON mirror BEGIN
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
WHEN old.payload IS NOT new.payload OR old.id IS NOT new.id OR old.dataset_id IS NOT new.dataset_id
  OR (old.deleted_at IS NULL) IS NOT (new.deleted_at IS NULL)
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
"""
