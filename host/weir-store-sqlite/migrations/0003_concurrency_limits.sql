CREATE TABLE concurrency_limits (
    tag         TEXT PRIMARY KEY,
    slot_limit  INTEGER NOT NULL,
    created     INTEGER NOT NULL
) WITHOUT ROWID;
-- A held slot is a lease: a process that dies stops renewing it, and it expires.
CREATE TABLE concurrency_slots (
    tag       TEXT NOT NULL,
    holder    TEXT NOT NULL,
    acquired  INTEGER NOT NULL,
    expires   INTEGER NOT NULL,
    PRIMARY KEY (tag, holder)
) WITHOUT ROWID;
