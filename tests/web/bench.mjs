// Petal's web benchmark (called by scripts/bench-web, which builds the page and bundles):
//   node bench.mjs --dist DIR --bundles DIR --photos DIR [--n 3] [--only NAME,NAME]
//                  [--backends webgpu,cpu]
// For every bundle folder in BUNDLES and each backend (WebGPU on SwiftShader, the CPU
// fallback), loads the page in headless Chromium, classifies N photos and prints per-image
// preprocessing and inference times (median), the model load time and the download size.
import fs from "node:fs";
import path from "node:path";
import { parseArgs, serve, launch, openPage, waitSettled, results, seconds } from "./lib.mjs";

const args = parseArgs();
const n = Number(args.n || 3);
const only = args.only ? args.only.split(",") : null;
const photos = fs
  .readdirSync(args.photos)
  .filter((f) => !f.startsWith("."))
  .sort()
  .slice(0, n)
  .map((f) => path.join(args.photos, f));
const bundles = fs
  .readdirSync(args.bundles)
  .filter((b) => fs.existsSync(path.join(args.bundles, b, "petal.json")))
  .filter((b) => !only || only.includes(b))
  .sort();

const server = await serve({ "/": args.dist, "/bundles/": args.bundles });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];

const backends = (args.backends || "webgpu,cpu").split(",");
for (const webgpu of [true, false].filter((w) => backends.includes(w ? "webgpu" : "cpu"))) {
  const { browser, context } = await launch({ webgpu });
  for (const b of bundles) {
    const meta = JSON.parse(fs.readFileSync(path.join(args.bundles, b, "petal.json"), "utf8"));
    const mb = fs.statSync(path.join(args.bundles, b, meta.weights)).size / 1e6;
    const query = `?model=bundles/${b}/${webgpu ? "" : "&backend=cpu"}`;
    const page = await openPage(context, `${server.base}/index.html${query}`);
    const t0 = performance.now();
    const s = await waitSettled(page, 3_600_000);
    const loadS = (performance.now() - t0) / 1000;
    if (s.state !== "ready") {
      console.log(`${b} ${webgpu ? "webgpu" : "cpu"}: ${s.status}`);
      console.log(page.log.slice(-10).join("\n"));
      await page.close();
      continue;
    }
    await page.setInputFiles("#file-input", photos);
    const got = (await results(page, photos.length, 3_600_000)).filter((r) => !r.error);
    const mem = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
    rows.push({
      bundle: b,
      arch: meta.arch,
      input: meta.image_size,
      precision: meta.precision,
      mb: mb.toFixed(1),
      backend: s.backend,
      load_s: loadS.toFixed(1),
      preprocess_ms: median(got.map((r) => r.preprocessMs)).toFixed(1),
      inference_ms: median(got.map((r) => r.inferenceMs)).toFixed(0),
      js_heap_mb: (mem / 1e6).toFixed(0),
    });
    console.log(JSON.stringify(rows.at(-1)));
    await page.close();
  }
  await browser.close();
}
await server.close();

const cols = Object.keys(rows[0] || {});
console.log(`\nPetal web benchmark: headless Chromium, ${photos.length} photos per row (medians)`);
console.log(cols.join("\t"));
for (const r of rows) console.log(cols.map((c) => r[c]).join("\t"));
