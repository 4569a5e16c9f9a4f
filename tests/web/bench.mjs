// Petal's web benchmark (called by scripts/bench-web, which builds the page and bundles):
//   node bench.mjs --dist DIR --bundles DIR --photos DIR [--n 3] [--only NAME,NAME]
//                  [--backends webgpu,cpu] [--batch N]
// For every bundle folder in BUNDLES and each backend (WebGPU, forced even on SwiftShader, and
// the wasm CPU path), in headless Chromium:
//   cold start   a fresh browser profile: navigation → model ready, and → first result (one
//                photo handed over the moment the page is ready), with the milestones between
//                (page wasm ready, bundle downloaded — both since navigation —, the worker's
//                wasm compile, which overlaps them, and the model load + warm-up pass);
//   cached       a second visit (bundle in the Cache API, page files revalidated): the same;
//   warm         N more photos: per-image time in the worker (decode, preprocessing, network)
//                p50/p90 and images/s as the page measures them; `--batch N` sets the photos
//                per network pass (the page's `?batch=`; its default depends on the backend).
import fs from "node:fs";
import path from "node:path";
import { parseArgs, serve, launch, openPage, waitSettled, results } from "./lib.mjs";

const args = parseArgs();
const n = Number(args.n || 3);
const only = args.only ? args.only.split(",") : null;
const allPhotos = fs
  .readdirSync(args.photos)
  .filter((f) => !f.startsWith("."))
  .sort()
  .map((f) => path.join(args.photos, f));
const photos = allPhotos.slice(0, n);
const bundles = fs
  .readdirSync(args.bundles)
  .filter((b) => fs.existsSync(path.join(args.bundles, b, "petal.json")))
  .filter((b) => !only || only.includes(b))
  .sort();

const server = await serve({ "/": args.dist, "/bundles/": args.bundles });
const rows = [];
const s = (ms) => (ms / 1000).toFixed(2);

// Navigation → ready, and → the first photo's result; milestones in ms since navigation.
async function visit(page, go) {
  await go();
  const settled = await waitSettled(page, 3_600_000);
  if (settled.state !== "ready") throw new Error(settled.status);
  await page.setInputFiles("#file-input", allPhotos.slice(0, 1));
  await page.waitForFunction(() => document.querySelector("#results .result[data-label], #results .result.failed"), null, {
    timeout: 3_600_000,
    polling: "raf",
  });
  return page.evaluate(() => ({ ...window.petal.startup, first: performance.now() }));
}

const backends = (args.backends || "webgpu,cpu").split(",");
for (const backend of backends) {
  const { browser } = await launch({ webgpu: backend === "webgpu" });
  for (const b of bundles) {
    const meta = JSON.parse(fs.readFileSync(path.join(args.bundles, b, "petal.json"), "utf8"));
    const mb = fs.statSync(path.join(args.bundles, b, meta.weights)).size / 1e6;
    const url = `${server.base}/index.html?model=bundles/${b}/&backend=${backend}${args.batch ? `&batch=${args.batch}` : ""}`;
    // A fresh context: nothing cached, as on a first visit.
    const context = await browser.newContext();
    const page = await openPage(context, "about:blank");
    try {
      const cold = await visit(page, () => page.goto(url));
      const cached = await visit(page, () => page.reload());
      await page.setInputFiles("#file-input", photos);
      // The first-result photo is already on the page: wait for it plus these.
      const got = (await results(page, photos.length + 1, 3_600_000)).slice(1).filter((r) => !r.error);
      const about = await page.evaluate(() => ({ ...document.getElementById("about").dataset }));
      const per = got.map((r) => r.preprocessMs + r.inferenceMs).sort((x, y) => x - y);
      const pct = (p) => per[Math.min(per.length - 1, Math.floor((p / 100) * per.length))];
      rows.push({
        bundle: b,
        backend: about.backend,
        batch: Math.max(...got.map((r) => r.dispatch)),
        mb: mb.toFixed(1),
        cold_ready_s: s(cold.ready),
        cold_first_s: s(cold.first),
        cold_wasm_s: s(cold.wasm),
        cold_download_s: s(cold.downloaded),
        cold_worker_wasm_s: s(cold.workerWasmMs),
        cold_model_s: s(cold.modelMs),
        cached_ready_s: s(cached.ready),
        cached_first_s: s(cached.first),
        warm_p50_ms: pct(50).toFixed(0),
        warm_p90_ms: pct(90).toFixed(0),
        images_per_s: Number(about.imagesPerSecond).toFixed(2),
      });
      console.log(JSON.stringify(rows.at(-1)));
    } catch (e) {
      console.log(`${b} ${backend}: ${e.message}`);
      console.log(page.log.slice(-10).join("\n"));
    }
    await context.close();
  }
  await browser.close();
}
await server.close();

const cols = Object.keys(rows[0] || {});
console.log(
  `\nPetal web benchmark: headless Chromium; cold = fresh profile, cached = second visit; ` +
    `warm = median/p90 of ${photos.length} photos`,
);
console.log(cols.join("\t"));
for (const r of rows) console.log(cols.map((c) => r[c]).join("\t"));
