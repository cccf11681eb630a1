-- Job records and idempotency keys (the Postgres side of persist::JobStore).
-- The record column holds the whole JobRecord as JSON; the other columns copy the fields that
-- queries filter and sort on. Ids are UUIDv7: Postgres compares uuids bytewise, so `id DESC`
-- is newest first, the same order as the embedded store.

CREATE TABLE jobs (
    id         uuid   PRIMARY KEY,
    tenant     text   NOT NULL,
    status     text   NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    record     jsonb  NOT NULL
);

-- A tenant's listing, newest first, with and without a status filter.
CREATE INDEX jobs_tenant_newest ON jobs (tenant, id DESC);
CREATE INDEX jobs_tenant_status_newest ON jobs (tenant, status, id DESC);

-- Jobs to resume after a restart: few, whatever the table's size.
CREATE INDEX jobs_unfinished ON jobs (id) WHERE status NOT IN ('succeeded', 'failed', 'cancelled');

-- Retention walks finished jobs by the time they finished (their last update).
CREATE INDEX jobs_finished_by_age ON jobs (updated_ms, id) WHERE status IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE idempotency (
    tenant text NOT NULL,
    key    text NOT NULL,
    job    uuid NOT NULL,
    PRIMARY KEY (tenant, key)
);

-- Retention deletes a job's keys with it.
CREATE INDEX idempotency_job ON idempotency (job);
