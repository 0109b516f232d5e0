// Builds the UI into the directory given as the first argument: index.html, app.js and
// app.css, every asset local (no CDN). Run by weir-server's build script.
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2] ?? "dist";
mkdirSync(out, { recursive: true });
await esbuild.build({
  entryPoints: { app: "src/main.jsx" },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: out,
  legalComments: "linked",
  logLevel: "warning",
});
copyFileSync("index.html", join(out, "index.html"));
copyFileSync("src/style.css", join(out, "app.css"));
