// A task run: input, output (or a link to a large one), state history with times,
// attempts with their errors, logs, and the plugin that ran it.
import { get } from "./api.js";
import { duration, time } from "./format.js";
import { Json, StateBadge, useLoad } from "./common.jsx";
import { Failure, Link } from "./main.jsx";

export function TaskRunPage({ id }) {
  const load = async () => {
    const detail = await get(`/task-runs/${encodeURIComponent(id)}`);
    const logs = await get(`/logs?run=${encodeURIComponent(id)}&limit=500`);
    return { detail, logs };
  };
  const { data, error } = useLoad(load, [id], 2000);
  if (error && !data) return <Failure error={error} />;
  if (!data) return <p class="muted">Loading…</p>;
  const { detail, logs } = data;
  const run = detail.task_run;
  return (
    <section>
      <div class="run-head">
        <h1>{run.name} <StateBadge state={run.state} /></h1>
        <p class="muted">
          Task <strong>{run.task}</strong> · {run.id}
          {run.flow_run_id && <> · in <Link href={`/runs/${run.flow_run_id}`}>its flow run</Link>{run.node && ` (node ${run.node}${run.map_index != null ? `, element ${run.map_index}` : ""})`}</>}
          {" "}· {duration(run.started, run.ended)}
        </p>
        {run.state_message && <p class="message">{run.state_message}</p>}
      </div>
      <div class="columns">
        <div>
          <h2>Input</h2>
          <Json value={run.input} />
          <h2>Output</h2>
          {detail.result_url ? <p><a href={detail.result_url}>The result is large: open it</a></p> : <Json value={detail.result ?? undefined} />}
        </div>
        <div>
          <h2>Attempts</h2>
          <table data-testid="attempts">
            <tbody>
              {detail.attempts.map((attempt) => (
                <tr data-attempt={attempt.attempt}><td>#{attempt.attempt}</td><td><StateBadge state={attempt.state} /></td><td>{duration(attempt.started, attempt.ended)}</td><td class="message">{attempt.message}</td></tr>
              ))}
            </tbody>
          </table>
          {detail.attempts.length === 0 && <p class="muted">No attempt ran{run.state === "Cached" ? ": the result came from the cache" : ""}.</p>}
          <h2>State history</h2>
          <table>
            <tbody>
              {detail.states.map((change) => (
                <tr><td>{time(change.at)}</td><td><StateBadge state={change.state} /></td><td>attempt {change.attempt}</td><td class="message">{change.message}</td></tr>
              ))}
            </tbody>
          </table>
          <h2>Plugin</h2>
          <p><Link href={`/plugins/${detail.plugin.digest}`}>{detail.plugin.name}</Link> <code>{detail.plugin.digest}</code></p>
          <h2>Grants</h2>
          {detail.grants.length > 0
            ? <ul data-testid="grants">{detail.grants.map((grant) => <li><code>{grant}</code></li>)}</ul>
            : <p class="muted">None: no file, environment variable or network.</p>}
          {run.tags.length > 0 && <p>Tags: {run.tags.map((tag) => <code>{tag} </code>)}</p>}
          {run.cache_key && <p class="muted">Cache key <code>{run.cache_key}</code></p>}
        </div>
      </div>
      <h2>Logs</h2>
      <table class="log-lines" data-testid="task-logs">
        <tbody>
          {logs.items.map((line) => (
            <tr data-level={line.level}><td class="muted">{time(line.at)}</td><td class={`level ${line.level}`}>{line.level.toUpperCase()}</td><td class="message">{line.message}</td></tr>
          ))}
        </tbody>
      </table>
      {logs.items.length === 0 && <p class="muted">No log lines.</p>}
    </section>
  );
}
