// The web UI of `weir serve`: a single page whose paths are the server's (`/runs/ID`
// opens a flow run), drawn with Preact over the JSON API.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { AuthNeeded, setToken } from "./api.js";
import { RunsPage } from "./runs.jsx";
import { FlowRunPage } from "./flowrun.jsx";
import { TaskRunPage } from "./taskrun.jsx";
import { CachePage, FlowsPage, LimitsPage, PluginPage, PluginsPage } from "./others.jsx";

export function navigate(path) {
  history.pushState(null, "", path);
  dispatchEvent(new PopStateEvent("popstate"));
}

// A link that changes the page without reloading it.
export function Link({ href, children, ...rest }) {
  const onClick = (event) => {
    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    navigate(href);
  };
  return <a href={href} onClick={onClick} {...rest}>{children}</a>;
}

function page(path) {
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case undefined:
    case "runs":
      return parts[1] ? <FlowRunPage key={parts[1]} id={parts[1]} /> : <RunsPage />;
    case "task-runs":
      return <TaskRunPage key={parts[1]} id={parts[1]} />;
    case "flows":
      return <FlowsPage />;
    case "plugins":
      return parts[1] ? <PluginPage digest={parts[1]} /> : <PluginsPage />;
    case "limits":
      return <LimitsPage />;
    case "cache":
      return <CachePage />;
    default:
      return <p class="error">No page {path}.</p>;
  }
}

function Login({ message }) {
  const [value, setValue] = useState("");
  return (
    <form class="login" onSubmit={(event) => { event.preventDefault(); setToken(value.trim()); location.reload(); }}>
      <h2>This server needs an API token</h2>
      <p>{message}</p>
      <input type="password" placeholder="token" value={value} onInput={(event) => setValue(event.target.value)} autofocus />
      <button type="submit">Sign in</button>
    </form>
  );
}

// Errors of a page: a missing token asks for one.
export function Failure({ error }) {
  if (error instanceof AuthNeeded) return <Login message={error.message} />;
  return <p class="error" role="alert">{error.message}</p>;
}

function App() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const changed = () => setPath(location.pathname);
    addEventListener("popstate", changed);
    return () => removeEventListener("popstate", changed);
  }, []);
  const section = path.split("/")[1] || "runs";
  const tab = (href, name, label) => (
    <Link href={href} class={section === name ? "active" : ""}>{label}</Link>
  );
  return (
    <>
      <header class="top">
        <Link href="/runs" class="brand">weir</Link>
        <nav>
          {tab("/runs", "runs", "Runs")}
          {tab("/flows", "flows", "Flows")}
          {tab("/plugins", "plugins", "Plugins")}
          {tab("/limits", "limits", "Concurrency limits")}
          {tab("/cache", "cache", "Cache")}
        </nav>
      </header>
      <main>{page(path)}</main>
    </>
  );
}

render(<App />, document.getElementById("app"));
