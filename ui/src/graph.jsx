// A flow run's graph: one box per flow node, laid out by dagre, edges for data (solid)
// and `wait_for` (dashed). A mapped node is one box with its task runs counted by
// state; expanded, it shows one cell per element (drawn on a canvas, so ten thousand
// cost nothing), each a link to its task run. Attempts show on the box and on cells.
import dagre from "@dagrejs/dagre";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { STATE_COLOURS, groupState } from "./format.js";
import { Counts, StateBadge } from "./common.jsx";
import { Link, navigate } from "./main.jsx";

const BOX = { width: 240, height: 76 };
// Preact 11 writes numbers in styles as they are: lengths need their unit.
const px = (value) => `${value}px`;
const CELL = 9;

function gridOf(count) {
  const columns = Math.max(10, Math.min(120, Math.ceil(Math.sqrt(count) * 1.6)));
  return { columns, rows: Math.ceil(count / columns) };
}

function boxSize(node, expanded) {
  if (!expanded) return BOX;
  const { columns, rows } = gridOf(node.count);
  return { width: Math.max(BOX.width, columns * CELL + 16), height: BOX.height + rows * CELL + 12 };
}

function layout(nodes, edges, expanded) {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 70, marginx: 16, marginy: 16 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) graph.setNode(node.id, { ...boxSize(node, expanded.has(node.id)) });
  const known = new Set(nodes.map((node) => node.id));
  for (const edge of edges) {
    if (known.has(edge.from) && known.has(edge.to)) graph.setEdge(edge.from, edge.to, { kind: edge.kind });
  }
  dagre.layout(graph);
  return {
    width: graph.graph().width ?? 0,
    height: graph.graph().height ?? 0,
    boxes: new Map(nodes.map((node) => [node.id, graph.node(node.id)])),
    lines: graph.edges().map((edge) => ({ ...graph.edge(edge), from: edge.v, to: edge.w })),
  };
}

function Cells({ runs, width, height }) {
  const canvas = useRef(null);
  useEffect(() => {
    const context = canvas.current.getContext("2d");
    const { columns } = gridOf(runs.length);
    context.clearRect(0, 0, width, height);
    runs.forEach((run, index) => {
      const x = (index % columns) * CELL;
      const y = Math.floor(index / columns) * CELL;
      context.fillStyle = STATE_COLOURS[run.state] ?? "#777";
      context.fillRect(x, y, CELL - 1, CELL - 1);
      if (run.attempts > 1) {
        context.fillStyle = "#fff";
        context.fillRect(x + 3, y + 3, 2, 2);
      }
    });
  }, [runs, width, height]);
  const open = (event) => {
    const rect = canvas.current.getBoundingClientRect();
    const { columns } = gridOf(runs.length);
    const index = Math.floor((event.clientY - rect.top) / CELL) * columns + Math.floor((event.clientX - rect.left) / CELL);
    if (runs[index]) navigate(`/task-runs/${runs[index].id}`);
  };
  const hover = (event) => {
    const rect = canvas.current.getBoundingClientRect();
    const { columns } = gridOf(runs.length);
    const index = Math.floor((event.clientY - rect.top) / CELL) * columns + Math.floor((event.clientX - rect.left) / CELL);
    const run = runs[index];
    canvas.current.title = run ? `${run.name}: ${run.state}${run.attempts > 1 ? `, ${run.attempts} attempts` : ""}` : "";
  };
  return <canvas ref={canvas} class="cells" width={width} height={height} onClick={open} onMouseMove={hover} data-cells={runs.length} />;
}

function NodeBox({ node, box, runs, expanded, toggle, subflows }) {
  const state = groupState(node.states);
  const single = !node.mapped && node.kind === "task" && runs.length === 1 ? runs[0] : null;
  const title = single ? <Link href={`/task-runs/${single.id}`}>{node.id}</Link>
    : node.kind === "subflow" && node.subflow_runs.length === 1 ? <Link href={`/runs/${node.subflow_runs[0]}`}>{node.id}</Link>
    : node.id;
  const attempts = single ? single.attempts : node.max_attempts;
  return (
    <div class={`node ${node.kind}`} data-node={node.id} data-state={state} data-count={node.count}
      style={{ left: px(box.x - box.width / 2), top: px(box.y - box.height / 2), width: px(box.width), height: px(box.height), borderColor: STATE_COLOURS[state] }}>
      <div class="node-head">
        <strong>{title}</strong>
        <StateBadge state={state} />
      </div>
      <div class="node-sub">{node.kind === "subflow" ? `subflow ${node.runs}` : node.runs}</div>
      <div class="node-foot">
        {node.mapped ? (
          <>
            <button class="link" onClick={() => toggle(node.id)} data-expand={node.id}>
              {expanded ? "▾" : "▸"} {node.count.toLocaleString()} runs
            </button>
            <Counts counts={node.states} />
          </>
        ) : node.kind === "subflow" ? (
          <span>{subflows.map((id, index) => <Link href={`/runs/${id}`}>run {index + 1} </Link>)}</span>
        ) : null}
        {attempts > 1 && <span class="attempts" data-attempts={attempts}>{node.mapped ? `up to ${attempts} attempts` : `${attempts} attempts`}</span>}
      </div>
      {expanded && <Cells runs={runs} width={box.width - 16} height={box.height - BOX.height - 8} />}
    </div>
  );
}

export function Graph({ nodes, edges, tasksByNode, onReady }) {
  const [expanded, setExpanded] = useState(new Set());
  const toggle = (id) => {
    const next = new Set(expanded);
    if (next.has(id)) next.delete(id); else next.add(id);
    setExpanded(next);
  };
  const shape = nodes.map((node) => `${node.id}:${expanded.has(node.id) ? node.count : 0}`).join(",");
  const drawn = useMemo(() => layout(nodes, edges, expanded), [shape, edges]);
  useLayoutEffect(() => { onReady?.(); }, [drawn]);
  if (nodes.length === 0) return <p class="muted">This run has no nodes yet.</p>;
  return (
    <div class="graph-scroll">
      <div class="graph" data-testid="graph" data-nodes={nodes.length} style={{ width: px(drawn.width), height: px(drawn.height) }}>
        <svg width={drawn.width} height={drawn.height} class="edges">
          <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
              <path d="M 0 0 L 10 5 L 0 10 z" fill="#8a94a3" />
            </marker>
          </defs>
          {drawn.lines.map((line) => (
            <polyline key={`${line.from}-${line.to}`} data-edge={`${line.from}->${line.to}`}
              points={line.points.map((point) => `${point.x},${point.y}`).join(" ")}
              class={line.kind === "wait" ? "wait" : "data"} marker-end="url(#arrow)" />
          ))}
        </svg>
        {nodes.map((node) => (
          <NodeBox key={node.id} node={node} box={drawn.boxes.get(node.id)} runs={tasksByNode.get(node.id) ?? []}
            expanded={expanded.has(node.id)} toggle={toggle} subflows={node.subflow_runs} />
        ))}
      </div>
    </div>
  );
}
