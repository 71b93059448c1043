-- Plugin lifecycle (issue 11): admitted components by digest (bytes included, so every replica
-- can load any version), the release of each plugin (compare-and-set on `generation`), and the
-- audit trail of every release change. Releases and audit entries are stored as JSON documents
-- of the core's `Release` / `ReleaseAudit`. Timestamps use the fixed-width text form of 0001.
CREATE TABLE plugin_components (
    digest       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    size         INTEGER NOT NULL,
    capabilities TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    admitted_at  TEXT NOT NULL,
    admitted_by  TEXT NOT NULL
);

-- A plugin version uploaded by an operator is one set of bytes for ever. Components loaded at
-- start-up (the built-in plugin, `plugins.dir`) are exempt: a rebuilt binary may carry new
-- bytes under an unchanged version.
CREATE UNIQUE INDEX plugin_components_uploaded_version_idx
    ON plugin_components (name, version) WHERE admitted_by <> 'startup';

CREATE TABLE plugin_releases (
    name       TEXT PRIMARY KEY,
    generation INTEGER NOT NULL CHECK (generation > 0),
    release    TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE plugin_release_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    at         TEXT NOT NULL,
    audit      TEXT NOT NULL,
    UNIQUE (name, generation)
);
