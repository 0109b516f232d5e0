// A flow run: its graph, a timeline of its task runs, its logs (level filter, live
// tail) and its details (parameters, result, state history, subflow runs, parent). All
// of it updates live from the run's event stream while it runs.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { follow, get } from "./api.js";
import { FINAL, STATE_COLOURS, duration, time } from "./format.js";
import { Counts, Json, StateBadge } from "./common.jsx";
import { Graph } from "./graph.jsx";
import { Failure, Link } from "./main.jsx";

const MAX_LOG_LINES = 5000;
const LEVELS = ["trace", "debug", "info", "warning", "error"];

export function FlowRunPage({ id }) {
  const [detail, setDetail] = useState(null);
  const [graph, setGraph] = useState(null);
  const [error, setError] = useState(null);
  const [logs, setLogs] = useState([]);
  const [tab, setTab] = useState("graph");
  const [version, setVersion] = useState(0);
  const tasks = useRef(new Map());
  const pendingLogs = useRef([]);
  const flags = useRef({ pending: false, reload: false });
  const started = useRef(performance.now());

  const load = async () => {
    try {
      const [run, drawn] = await Promise.all([get(`/flow-runs/${encodeURIComponent(id)}`), get(`/flow-runs/${encodeURIComponent(id)}/graph`)]);
      tasks.current = new Map(drawn.task_runs.map((task) => [task.id, task]));
      setDetail(run);
      setGraph(drawn);
      setVersion((value) => value + 1);
    } catch (failure) {
      setError(failure);
    }
  };

  // Many events in a burst make one redraw (or one reload, when the run itself changed).
  const schedule = (reload) => {
    if (reload) flags.current.reload = true;
    if (flags.current.pending) return;
    flags.current.pending = true;
    setTimeout(() => {
      const wantsReload = flags.current.reload;
      flags.current = { pending: false, reload: false };
      if (pendingLogs.current.length) {
        const fresh = pendingLogs.current;
        pendingLogs.current = [];
        setLogs((old) => old.concat(fresh).slice(-MAX_LOG_LINES));
      }
      if (wantsReload) load();
      else setVersion((value) => value + 1);
    }, 200);
  };

  useEffect(() => {
    load();
    return follow(id, (name, event) => {
      if (name === "task-run") {
        const known = tasks.current.has(event.task_run.id);
        tasks.current.set(event.task_run.id, event.task_run);
        schedule(!known && graphNodeMissing(event.task_run.node));
      } else if (name === "log") {
        pendingLogs.current.push(event.line);
        schedule(false);
      } else if (name === "flow-run" || name === "resync" || name === "end") {
        schedule(true);
      }
    });
  }, [id]);

  const nodeIds = useRef(new Set());
  const graphNodeMissing = (node) => node != null && !nodeIds.current.has(node);

  const tasksByNode = useMemo(() => {
    const grouped = new Map();
    for (const task of tasks.current.values()) {
      if (task.node == null) continue;
      if (!grouped.has(task.node)) grouped.set(task.node, []);
      grouped.get(task.node).push(task);
    }
    for (const list of grouped.values()) list.sort((a, b) => (a.map_index ?? 0) - (b.map_index ?? 0));
    return grouped;
  }, [version]);

  const nodes = useMemo(() => {
    if (!graph) return [];
    nodeIds.current = new Set(graph.nodes.map((node) => node.id));
    return graph.nodes.map((node) => {
      if (node.kind !== "task") return node;
      const runs = tasksByNode.get(node.id) ?? [];
      const states = {};
      let attempts = 0;
      for (const run of runs) {
        states[run.state] = (states[run.state] ?? 0) + 1;
        attempts = Math.max(attempts, run.attempts);
      }
      return { ...node, states, count: runs.length, max_attempts: attempts };
    });
  }, [graph, tasksByNode]);

  if (error) return <Failure error={error} />;
  if (!detail || !graph) return <p class="muted">Loading…</p>;
  const run = detail.flow_run;
  const ready = () => {
    document.body.dataset.graphReadyMs = String(Math.round(performance.now() - started.current));
  };
  return (
    <section>
      <div class="run-head">
        <h1>{run.name} <StateBadge state={run.state} /></h1>
        <p class="muted">
          Flow <strong>{run.flow}</strong>{run.tags.map((tag) => <span class="tag">{tag}</span>)} · {run.id} · started {time(run.started)} · {duration(run.started, run.ended)}
          {run.parent_flow_run_id && <> · subflow of <Link href={`/runs/${run.parent_flow_run_id}`}>its parent run</Link> (node {run.parent_node})</>}
        </p>
        {run.state_message && <p class="message">{run.state_message}</p>}
        <p><Counts counts={Object.fromEntries(nodes.filter((node) => node.kind === "task").flatMap((node) => Object.entries(node.states)).reduce((all, [state, count]) => all.set(state, (all.get(state) ?? 0) + count), new Map()))} /></p>
      </div>
      <nav class="tabs">
        {[["graph", "Graph"], ["timeline", "Timeline"], ["logs", `Logs (${logs.length})`], ["details", "Details"]].map(([name, label]) => (
          <button class={tab === name ? "active" : ""} data-tab={name} onClick={() => setTab(name)}>{label}</button>
        ))}
      </nav>
      {tab === "graph" && <Graph nodes={nodes} edges={graph.edges} tasksByNode={tasksByNode} onReady={ready} />}
      {tab === "timeline" && <Timeline tasks={[...tasks.current.values()]} run={run} />}
      {tab === "logs" && <Logs lines={logs} running={!FINAL.has(run.state)} />}
      {tab === "details" && <Details detail={detail} tasks={[...tasks.current.values()]} />}
    </section>
  );
}

const ROW = 18;
const LABEL = 180;

// A Gantt chart of the task runs, drawn on a canvas the height of the view: only the
// rows in sight are drawn, so ten thousand rows scroll as fast as ten.
function Timeline({ tasks, run }) {
  const scroller = useRef(null);
  const canvas = useRef(null);
  const [top, setTop] = useState(0);
  const rows = useMemo(() => [...tasks].sort((a, b) => (a.started ?? a.created) - (b.started ?? b.created)), [tasks]);
  const start = run.started ?? run.created;
  const end = run.ended ?? Math.max(Date.now() * 1000, ...rows.map((task) => task.ended ?? 0));
  const height = 480;
  useEffect(() => {
    const element = canvas.current;
    const width = element.clientWidth;
    element.width = width;
    const context = element.getContext("2d");
    context.clearRect(0, 0, width, height);
    context.font = "12px system-ui, sans-serif";
    const span = Math.max(1, end - start);
    const first = Math.floor(top / ROW);
    for (let index = first; index < Math.min(rows.length, first + Math.ceil(height / ROW) + 1); index++) {
      const task = rows[index];
      const y = index * ROW - top;
      context.fillStyle = "#44505e";
      context.fillText(task.name, 4, y + 13, LABEL - 8);
      if (task.started == null) continue;
      const from = LABEL + ((task.started - start) / span) * (width - LABEL - 8);
      const to = LABEL + (((task.ended ?? Date.now() * 1000) - start) / span) * (width - LABEL - 8);
      context.fillStyle = STATE_COLOURS[task.state] ?? "#777";
      context.fillRect(from, y + 3, Math.max(2, to - from), ROW - 6);
    }
  }, [rows, top, start, end]);
  return (
    <div class="timeline">
      <p class="muted">{rows.length.toLocaleString()} task runs over {duration(start, run.ended)}</p>
      <div class="timeline-scroll" ref={scroller} style={{ height: `${height}px` }} onScroll={(event) => setTop(event.target.scrollTop)}>
        <div style={{ height: `${Math.max(height, rows.length * ROW)}px`, position: "relative" }}>
          <canvas ref={canvas} data-testid="timeline" data-rows={rows.length} style={{ position: "sticky", top: "0", width: "100%", height: `${height}px` }} height={height} />
        </div>
      </div>
    </div>
  );
}

function Logs({ lines, running }) {
  const [level, setLevel] = useState("");
  const [text, setText] = useState("");
  const minimum = level ? LEVELS.indexOf(level) : 0;
  const shown = lines.filter((line) => LEVELS.indexOf(line.level) >= minimum && (!text || line.message.includes(text)));
  return (
    <div class="logs">
      <form class="filters" onSubmit={(event) => event.preventDefault()}>
        <select name="level" value={level} onChange={(event) => setLevel(event.target.value)}>
          <option value="">All levels</option>
          {LEVELS.slice(1).map((name) => <option value={name}>{name} and above</option>)}
        </select>
        <input type="search" placeholder="Filter text" value={text} onInput={(event) => setText(event.target.value)} />
        {running && <span class="live">● live</span>}
      </form>
      <table class="log-lines" data-testid="logs">
        <tbody>
          {shown.map((line, index) => (
            <tr key={index} data-level={line.level}>
              <td class="muted">{time(line.at)}</td>
              <td class={`level ${line.level}`}>{line.level.toUpperCase()}</td>
              <td><Link href={`/task-runs/${line.task_run_id}`}>{line.task_run}</Link></td>
              <td class="message">{line.message}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown.length === 0 && <p class="muted">No log lines{level ? ` at ${level} or above` : ""}.</p>}
    </div>
  );
}

function Details({ detail, tasks }) {
  const run = detail.flow_run;
  const first = tasks.slice(0, 200);
  return (
    <div class="details">
      <h2>Parameters</h2>
      <Json value={run.parameters} />
      <h2>Result</h2>
      <Json value={detail.result ?? undefined} />
      <h2>State history</h2>
      <table>
        <tbody>
          {detail.states.map((change) => (
            <tr><td>{time(change.at)}</td><td><StateBadge state={change.state} /></td><td>attempt {change.attempt}</td><td>{change.message}</td></tr>
          ))}
        </tbody>
      </table>
      {detail.subflow_runs.length > 0 && (
        <>
          <h2>Subflow runs</h2>
          <ul>{detail.subflow_runs.map((sub) => <li><Link href={`/runs/${sub.id}`}>{sub.name}</Link> ({sub.flow}, node {sub.parent_node}) <StateBadge state={sub.state} /></li>)}</ul>
        </>
      )}
      <h2>Task runs {tasks.length > first.length && <span class="muted">(first {first.length} of {tasks.length.toLocaleString()})</span>}</h2>
      <table>
        <tbody>
          {first.map((task) => (
            <tr><td><Link href={`/task-runs/${task.id}`}>{task.name}</Link></td><td>{task.node}</td><td><StateBadge state={task.state} /></td><td>{task.attempts} attempt{task.attempts === 1 ? "" : "s"}</td><td>{duration(task.started, task.ended)}</td></tr>
          ))}
        </tbody>
      </table>
      {detail.running_in && <p class="muted">Running in process {detail.running_in.pid} on {detail.running_in.host}.</p>}
    </div>
  );
}
