// Pieces every page uses: state badges, counts by state, JSON blocks, loading.
import { useEffect, useRef, useState } from "preact/hooks";
import { STATES, STATE_COLOURS } from "./format.js";

export function StateBadge({ state }) {
  return <span class="state" data-state={state} style={{ background: STATE_COLOURS[state] ?? "#777" }}>{state}</span>;
}

export function Counts({ counts }) {
  const present = STATES.filter((state) => counts?.[state]);
  if (present.length === 0) return <span class="muted">none</span>;
  return (
    <span class="counts">
      {present.map((state) => (
        <span key={state} class="count" data-state={state} title={state} style={{ borderColor: STATE_COLOURS[state] }}>
          <i style={{ background: STATE_COLOURS[state] }} />{counts[state].toLocaleString()} {state}
        </span>
      ))}
    </span>
  );
}

export function Json({ value }) {
  return <pre class="json">{value === undefined ? "—" : JSON.stringify(value, null, 2)}</pre>;
}

// Loads `load()` on mount and whenever `keys` change; `every` ms reloads it.
export function useLoad(load, keys, every) {
  const [state, setState] = useState({ data: null, error: null });
  const current = useRef(0);
  useEffect(() => {
    const ticket = ++current.current;
    let timer;
    const run = async () => {
      try {
        const data = await load();
        if (ticket === current.current) setState({ data, error: null });
      } catch (error) {
        if (ticket === current.current) setState((old) => ({ data: old.data, error }));
      }
      if (every && ticket === current.current) timer = setTimeout(run, every);
    };
    run();
    return () => { current.current++; clearTimeout(timer); };
  }, keys);
  return state;
}
