// Flows (and a form to run one), plugins and their tasks, concurrency limits with who
// holds their slots, and the result cache.
import { useState } from "preact/hooks";
import { del, get, post } from "./api.js";
import { time } from "./format.js";
import { Json, useLoad } from "./common.jsx";
import { Failure, Link, navigate } from "./main.jsx";

export function FlowsPage() {
  const { data, error } = useLoad(() => get("/flows"), []);
  const [parameters, setParameters] = useState({});
  const [failure, setFailure] = useState(null);
  if (error) return <Failure error={error} />;
  if (!data) return <p class="muted">Loading…</p>;
  const submit = async (name) => {
    setFailure(null);
    try {
      const text = parameters[name]?.trim();
      const run = await post(`/flows/${encodeURIComponent(name)}/runs`, { parameters: text ? JSON.parse(text) : {} });
      navigate(run.url);
    } catch (problem) {
      setFailure({ name, message: problem.message });
    }
  };
  return (
    <section>
      <h1>Flows</h1>
      {data.length === 0 && <p class="muted">No flow files: start the server with <code>--flows DIR</code>.</p>}
      {data.map((flow) => (
        <article class="card" data-flow={flow.name}>
          <h2>{flow.name} <span class="muted">{flow.file}</span></h2>
          {flow.description && <p>{flow.description}</p>}
          {flow.error ? <p class="error">{flow.error}</p> : (
            <>
              <p class="muted">{flow.nodes} nodes · parameters: {flow.parameters.map((parameter) => `${parameter.name} (${parameter.type}${parameter.default !== null ? ` = ${JSON.stringify(parameter.default)}` : ", required"})`).join(", ") || "none"}</p>
              <textarea placeholder='{"values": [1, 2, 3]}' value={parameters[flow.name] ?? ""} onInput={(event) => setParameters({ ...parameters, [flow.name]: event.target.value })} />
              <button onClick={() => submit(flow.name)}>Run</button>
              {failure?.name === flow.name && <p class="error">{failure.message}</p>}
            </>
          )}
        </article>
      ))}
    </section>
  );
}

export function PluginsPage() {
  const { data, error } = useLoad(() => get("/plugins"), []);
  if (error) return <Failure error={error} />;
  if (!data) return <p class="muted">Loading…</p>;
  return (
    <section>
      <h1>Plugins</h1>
      <table data-testid="plugins">
        <thead><tr><th>Name</th><th>Digest</th><th>Size</th><th>Tasks</th><th>First seen</th></tr></thead>
        <tbody>
          {data.map((plugin) => (
            <tr data-plugin={plugin.name}>
              <td><Link href={`/plugins/${plugin.digest}`}>{plugin.name}</Link></td>
              <td><code>{plugin.digest.slice(0, 12)}</code></td>
              <td>{(plugin.size_bytes / 1024).toFixed(0)} KiB</td>
              <td>{plugin.tasks.map((task) => task.name).join(", ")}</td>
              <td>{time(plugin.first_seen)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function PluginPage({ digest }) {
  const { data, error } = useLoad(() => get(`/plugins/${encodeURIComponent(digest)}`), [digest]);
  if (error) return <Failure error={error} />;
  if (!data) return <p class="muted">Loading…</p>;
  return (
    <section>
      <h1>{data.name}</h1>
      <p class="muted"><code>{data.digest}</code> · {(data.size_bytes / 1024).toFixed(0)} KiB · first seen {time(data.first_seen)}</p>
      {data.tasks.map((task) => (
        <article class="card" data-task={task.name}>
          <h2>{task.name} {task.version && <span class="muted">v{task.version}</span>}</h2>
          {task.description && <p>{task.description}</p>}
          <p class="muted">
            retries {task.retry.retries} · timeout {task.timeout ? `${task.timeout} ms` : "none"} · cache {task.cache_policy}
            {task.tags.length > 0 && ` · tags ${task.tags.join(", ")}`}
            {task.needs.length > 0 && ` · needs ${task.needs.join(", ")}`}
          </p>
          {task.input_schema && <><h3>Input schema</h3><Json value={task.input_schema} /></>}
          {task.output_schema && <><h3>Output schema</h3><Json value={task.output_schema} /></>}
        </article>
      ))}
    </section>
  );
}

export function LimitsPage() {
  const { data, error } = useLoad(() => get("/concurrency-limits"), [], 2000);
  if (error) return <Failure error={error} />;
  if (!data) return <p class="muted">Loading…</p>;
  return (
    <section>
      <h1>Concurrency limits</h1>
      {data.length === 0 && <p class="muted">No limits (set one with <code>weir concurrency-limit create TAG N</code>).</p>}
      <table data-testid="limits">
        <thead><tr><th>Tag</th><th>Limit</th><th>In use</th><th>Held by</th></tr></thead>
        <tbody>
          {data.map((limit) => (
            <tr data-tag={limit.tag}>
              <td><code>{limit.tag}</code></td>
              <td>{limit.limit}</td>
              <td>{limit.holders.length}</td>
              <td>{limit.holders.map((holder) => holder.startsWith("trun_") ? <Link href={`/task-runs/${holder}`}>{holder} </Link> : <code>{holder} </code>)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

export function CachePage() {
  const [cleared, setCleared] = useState(null);
  const { data, error } = useLoad(() => get("/cache"), [cleared]);
  if (error) return <Failure error={error} />;
  if (!data) return <p class="muted">Loading…</p>;
  const clear = async () => {
    const answer = await del("/cache");
    setCleared(answer.cleared);
  };
  return (
    <section>
      <h1>Cache</h1>
      <p>{data.length.toLocaleString()} entries <button onClick={clear} disabled={data.length === 0}>Clear the cache</button> {cleared != null && <span class="muted">cleared {cleared}</span>}</p>
      <table data-testid="cache">
        <thead><tr><th>Task</th><th>Key</th><th>Made by</th><th>Created</th><th>Expires</th></tr></thead>
        <tbody>
          {data.map((entry) => (
            <tr>
              <td>{entry.task}</td>
              <td><code>{entry.key.slice(0, 16)}</code></td>
              <td><Link href={`/task-runs/${entry.task_run_id}`}>{entry.task_run_id}</Link></td>
              <td>{time(entry.created)}</td>
              <td>{time(entry.expires)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
