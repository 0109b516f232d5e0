// The runs list: live (reloaded every two seconds), filtered by state, flow and name,
// in pages of 50 by cursor, so that it costs the same at a million runs.
import { useState } from "preact/hooks";
import { get } from "./api.js";
import { STATES, duration, time } from "./format.js";
import { Counts, StateBadge, useLoad } from "./common.jsx";
import { Failure, Link } from "./main.jsx";

const PAGE = 50;

export function RunsPage() {
  const [filters, setFilters] = useState({ state: "", flow: "", name: "", tag: "", subflows: false });
  const [cursors, setCursors] = useState([null]);
  const cursor = cursors[cursors.length - 1];
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (filters.state) query.set("state", filters.state);
  if (filters.flow) query.set("flow", filters.flow);
  if (filters.name) query.set("name", filters.name);
  if (filters.tag) query.set("tag", filters.tag);
  if (!filters.subflows) query.set("top", "true");
  if (cursor) query.set("before", cursor);
  const path = `/flow-runs?${query}`;
  const { data, error } = useLoad(() => get(path), [path], 2000);
  const change = (field) => (event) => {
    const value = event.target.type === "checkbox" ? event.target.checked : event.target.value;
    setFilters({ ...filters, [field]: value });
    setCursors([null]);
  };
  return (
    <section>
      <h1>Flow runs</h1>
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <input type="search" name="name" placeholder="Search by name" value={filters.name} onInput={change("name")} />
        <select name="state" value={filters.state} onChange={change("state")}>
          <option value="">Any state</option>
          {STATES.map((state) => <option value={state}>{state}</option>)}
        </select>
        <input name="flow" placeholder="Flow" value={filters.flow} onInput={change("flow")} />
        <input name="tag" placeholder="Tag" value={filters.tag} onInput={change("tag")} />
        <label><input type="checkbox" checked={filters.subflows} onChange={change("subflows")} /> subflow runs</label>
      </form>
      {error && <Failure error={error} />}
      {data && (
        <>
          <table class="runs" data-testid="runs">
            <thead>
              <tr><th>Name</th><th>Flow</th><th>State</th><th>Start</th><th>Duration</th><th>Task runs</th></tr>
            </thead>
            <tbody>
              {data.items.map((run) => (
                <tr key={run.id} data-run={run.id}>
                  <td><Link href={`/runs/${run.id}`}>{run.name}</Link></td>
                  <td>{run.flow}{run.tags.map((tag) => <span class="tag">{tag}</span>)}</td>
                  <td><StateBadge state={run.state} /></td>
                  <td>{time(run.started ?? run.created)}</td>
                  <td>{duration(run.started, run.ended)}</td>
                  <td><Counts counts={run.task_run_states} /></td>
                </tr>
              ))}
            </tbody>
          </table>
          {data.items.length === 0 && <p class="muted">No flow runs match.</p>}
          <div class="pager">
            <button disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>
            <span class="muted">page {cursors.length}</span>
            <button disabled={!data.next} onClick={() => setCursors([...cursors, data.next])}>Older</button>
          </div>
        </>
      )}
    </section>
  );
}
