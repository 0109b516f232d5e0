-- Claims look for one kind of row at a time: untagged task runs (one statement claims
-- them), tagged task runs (which take concurrency slots), flow runs to drive. An index
-- per kind keeps a claim from stepping over thousands of rows of another kind (a flow
-- claim over a queued map of 10,000 task runs). Each row is in one of them, so a queued
-- row costs no more index writes than before.
DROP INDEX work_queue_claimable;
CREATE INDEX work_queue_claimable_tasks ON work_queue (ready_at, created)
    WHERE NOT done AND kind = 'task' AND tags = '';
CREATE INDEX work_queue_claimable_tagged ON work_queue (ready_at, created)
    WHERE NOT done AND kind = 'task' AND tags <> '';
CREATE INDEX work_queue_claimable_flows ON work_queue (ready_at, created)
    WHERE NOT done AND kind = 'flow';
