// Bundle the widget: js/index.ts -> featmon_widget/static/widget.js (ESM, minified, everything
// inlined: no CDN at run time) and js/styles.css -> featmon_widget/static/widget.css; copy the
// small plotly dist the widget uses to featmon_widget/static/plotly-basic.min.js, for the static
// HTML reports. `node js/build.mjs --watch` rebuilds on change.
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outdir = join(root, "featmon_widget", "static");
const watch = process.argv.includes("--watch");
const MAX_BUNDLE_BYTES = 1.3e6;

const common = { bundle: true, minify: !watch, logLevel: "info", absWorkingDir: root };
const builds = [
  {
    ...common,
    entryPoints: ["js/index.ts"],
    outfile: join(outdir, "widget.js"),
    format: "esm",
    target: "es2020",
    platform: "browser",
    sourcemap: watch ? "inline" : false,
    legalComments: "none",
  },
  { ...common, entryPoints: ["js/styles.css"], outfile: join(outdir, "widget.css") },
];

mkdirSync(outdir, { recursive: true });
copyFileSync(
  join(root, "node_modules", "plotly.js-basic-dist-min", "plotly-basic.min.js"),
  join(outdir, "plotly-basic.min.js"),
);

if (watch) {
  for (const options of builds) await (await esbuild.context(options)).watch();
} else {
  await Promise.all(builds.map((options) => esbuild.build(options)));
  const size = statSync(join(outdir, "widget.js")).size;
  if (size > MAX_BUNDLE_BYTES) {
    console.error(`widget.js is ${size} bytes, over the ${MAX_BUNDLE_BYTES} byte budget`);
    process.exit(1);
  }
}
