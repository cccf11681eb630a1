-- Batches (the Postgres side of persist::JobStore's batch records): written once, read by id.
-- The record column holds the whole BatchRecord as JSON (its entries' job ids in order).

CREATE TABLE batches (
    id         uuid   PRIMARY KEY,
    tenant     text   NOT NULL,
    created_ms bigint NOT NULL,
    record     jsonb  NOT NULL
);

-- Retention deletes batches by age.
CREATE INDEX batches_by_age ON batches (created_ms);
