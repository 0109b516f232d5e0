ALTER TABLE task_runs ADD COLUMN map_index INTEGER;
-- Outputs of completed nodes, so a resumed flow run does not run them again.
CREATE TABLE flow_run_nodes (
    flow_run_id    TEXT NOT NULL,
    node           TEXT NOT NULL,
    result_digest  TEXT NOT NULL,
    PRIMARY KEY (flow_run_id, node)
) WITHOUT ROWID;
