-- The flow's nodes and their dependencies, recorded with each flow run (JSON), so that a
-- reader can draw a run's graph without the flow file.
ALTER TABLE flow_runs ADD COLUMN graph_json TEXT;
-- The flow's tags (a JSON list), to find its runs by.
ALTER TABLE flow_runs ADD COLUMN tags_json TEXT NOT NULL DEFAULT '[]';
-- The runs list filtered by state or flow, newest first, at any number of runs.
CREATE INDEX flow_runs_by_state ON flow_runs (state, id);
CREATE INDEX flow_runs_by_flow ON flow_runs (flow, id);
