-- Tenants, their tokens, and the tenant that owns each run, plugin, cache entry, limit
-- and queued row. Everything recorded before belongs to the default tenant.
CREATE TABLE tenants (
    name           TEXT PRIMARY KEY,
    weight         INTEGER NOT NULL DEFAULT 1,
    -- Quotas and grant ceilings (JSON), set by the operator.
    settings_json  TEXT NOT NULL DEFAULT '{}',
    -- Its bucket of submissions (a rate quota): runs left, and when it was counted.
    bucket_runs    DOUBLE PRECISION,
    bucket_at      BIGINT,
    created        BIGINT NOT NULL
);
INSERT INTO tenants (name, created)
    VALUES ('default', (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT);

-- Only the hash of a token's text is kept.
CREATE TABLE tokens (
    id       TEXT PRIMARY KEY,
    tenant   TEXT NOT NULL,
    scope    TEXT NOT NULL,
    hash     TEXT NOT NULL UNIQUE,
    created  BIGINT NOT NULL,
    expires  BIGINT,
    revoked  BIGINT
);
CREATE INDEX tokens_by_tenant ON tokens (tenant);

-- A constant default: PostgreSQL adds such a column without rewriting the table.
ALTER TABLE flow_runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE task_runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
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
ALTER TABLE work_queue ADD COLUMN memory_bytes BIGINT;
-- Claims take each tenant's rows in turn: the tenants with rows of a kind are found one
-- index step each (a recursive skip), then each one's rows, its priority first, oldest
-- first. One index per kind of row, as before, now led by the tenant.
DROP INDEX work_queue_claimable_tasks;
DROP INDEX work_queue_claimable_tagged;
DROP INDEX work_queue_claimable_flows;
CREATE INDEX work_queue_claimable_tasks ON work_queue (tenant, priority DESC, ready_at, created)
    WHERE NOT done AND kind = 'task' AND tags = '';
CREATE INDEX work_queue_claimable_tagged ON work_queue (tenant, priority DESC, ready_at, created)
    WHERE NOT done AND kind = 'task' AND tags <> '';
CREATE INDEX work_queue_claimable_flows ON work_queue (tenant, priority DESC, ready_at, created)
    WHERE NOT done AND kind = 'flow';
-- What a tenant's claimed rows hold (its quotas of runs and memory in flight).
CREATE INDEX work_queue_held ON work_queue (tenant) WHERE worker IS NOT NULL AND NOT done;

-- Keys that were unique in the store become unique per tenant.
ALTER TABLE plugins ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE plugins DROP CONSTRAINT plugins_pkey;
ALTER TABLE plugins ADD PRIMARY KEY (tenant, digest);
DROP INDEX plugins_by_first_seen;
CREATE INDEX plugins_by_first_seen ON plugins (tenant, first_seen);

ALTER TABLE cache_entries ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE cache_entries DROP CONSTRAINT cache_entries_pkey;
ALTER TABLE cache_entries ADD PRIMARY KEY (tenant, key);

ALTER TABLE concurrency_limits ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE concurrency_limits DROP CONSTRAINT concurrency_limits_pkey;
ALTER TABLE concurrency_limits ADD PRIMARY KEY (tenant, tag);

ALTER TABLE concurrency_slots ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE concurrency_slots DROP CONSTRAINT concurrency_slots_pkey;
ALTER TABLE concurrency_slots ADD PRIMARY KEY (tenant, tag, holder);
