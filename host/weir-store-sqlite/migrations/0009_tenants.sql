-- Tenants, their tokens, and the tenant that owns each run, plugin, cache entry, limit
-- and queued row. Everything recorded before belongs to the default tenant.
CREATE TABLE tenants (
    name           TEXT PRIMARY KEY,
    weight         INTEGER NOT NULL DEFAULT 1,
    -- Quotas and grant ceilings (JSON), set by the operator.
    settings_json  TEXT NOT NULL DEFAULT '{}',
    -- Its bucket of submissions (a rate quota): runs left, and when it was counted.
    bucket_runs    REAL,
    bucket_at      INTEGER,
    created        INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO tenants (name, created) VALUES ('default', CAST(unixepoch('subsec') * 1000000 AS INTEGER));

-- Only the hash of a token's text is kept.
CREATE TABLE tokens (
    id       TEXT PRIMARY KEY,
    tenant   TEXT NOT NULL,
    scope    TEXT NOT NULL,
    hash     TEXT NOT NULL UNIQUE,
    created  INTEGER NOT NULL,
    expires  INTEGER,
    revoked  INTEGER
) WITHOUT ROWID;
CREATE INDEX tokens_by_tenant ON tokens (tenant);

ALTER TABLE flow_runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE task_runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
-- The runs list of one tenant, newest first, and its filters.
DROP INDEX flow_runs_by_state;
DROP INDEX flow_runs_by_flow;
CREATE INDEX flow_runs_by_tenant ON flow_runs (tenant, id);
CREATE INDEX flow_runs_by_state ON flow_runs (tenant, state, id);
CREATE INDEX flow_runs_by_flow ON flow_runs (tenant, flow, id);
CREATE INDEX task_runs_by_tenant ON task_runs (tenant, id);

ALTER TABLE work_queue ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
-- Higher first within a tenant.
ALTER TABLE work_queue ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- A task run's memory limit, counted against its tenant's memory in flight.
ALTER TABLE work_queue ADD COLUMN memory_bytes INTEGER;
-- Claims take each tenant's rows in turn: the tenants with rows are found one index
-- step each, then each one's rows, its priority first, oldest first.
DROP INDEX work_queue_claimable;
CREATE INDEX work_queue_claimable ON work_queue (kind, tenant, priority DESC, ready_at, created)
    WHERE done = 0;
-- What a tenant's claimed rows hold (its quotas of runs and memory in flight).
CREATE INDEX work_queue_held ON work_queue (tenant) WHERE worker IS NOT NULL AND done = 0;

-- Keys that were unique in the store become unique per tenant: tables rebuilt.
CREATE TABLE plugins_by_tenant (
    tenant      TEXT NOT NULL DEFAULT 'default',
    digest      TEXT NOT NULL,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    tasks_json  TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (tenant, digest)
) WITHOUT ROWID;
INSERT INTO plugins_by_tenant (digest, name, size, tasks_json, first_seen)
    SELECT digest, name, size, tasks_json, first_seen FROM plugins;
DROP TABLE plugins;
ALTER TABLE plugins_by_tenant RENAME TO plugins;
CREATE INDEX plugins_by_first_seen ON plugins (tenant, first_seen);

CREATE TABLE cache_entries_by_tenant (
    tenant         TEXT NOT NULL DEFAULT 'default',
    key            TEXT NOT NULL,
    task           TEXT NOT NULL,
    plugin_digest  TEXT NOT NULL,
    result_digest  TEXT NOT NULL REFERENCES results (digest),
    task_run_id    TEXT NOT NULL,
    created        INTEGER NOT NULL,
    expires        INTEGER,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
INSERT INTO cache_entries_by_tenant (key, task, plugin_digest, result_digest, task_run_id, created, expires)
    SELECT key, task, plugin_digest, result_digest, task_run_id, created, expires FROM cache_entries;
DROP TABLE cache_entries;
ALTER TABLE cache_entries_by_tenant RENAME TO cache_entries;

CREATE TABLE concurrency_limits_by_tenant (
    tenant      TEXT NOT NULL DEFAULT 'default',
    tag         TEXT NOT NULL,
    slot_limit  INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    PRIMARY KEY (tenant, tag)
) WITHOUT ROWID;
INSERT INTO concurrency_limits_by_tenant (tag, slot_limit, created)
    SELECT tag, slot_limit, created FROM concurrency_limits;
DROP TABLE concurrency_limits;
ALTER TABLE concurrency_limits_by_tenant RENAME TO concurrency_limits;

CREATE TABLE concurrency_slots_by_tenant (
    tenant    TEXT NOT NULL DEFAULT 'default',
    tag       TEXT NOT NULL,
    holder    TEXT NOT NULL,
    acquired  INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    PRIMARY KEY (tenant, tag, holder)
) WITHOUT ROWID;
INSERT INTO concurrency_slots_by_tenant (tag, holder, acquired, expires)
    SELECT tag, holder, acquired, expires FROM concurrency_slots;
DROP TABLE concurrency_slots;
ALTER TABLE concurrency_slots_by_tenant RENAME TO concurrency_slots;
CREATE INDEX concurrency_slots_by_holder ON concurrency_slots (holder);
