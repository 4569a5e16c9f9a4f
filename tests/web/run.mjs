// Petal's browser tests (called by scripts/test-web, which prepares the inputs):
//   node run.mjs --dist DIR --bundle DIR --photos DIR --work DIR [--petal BIN]
// With --petal the page is served by `petal serve` (what users run): the test photos and
// folders are copied into the page folder DIST, which it then changes. Without it, by a
// small Node server.
// WORK holds predict.json (`petal predict --json --logits` on every photo), pre/NAME.npy
// (`petal preprocess` at 256/224), batch/ (a folder with bad files) and score.csv
// (`petal score` on it).
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import {
  parseArgs,
  serve,
  servePetal,
  launch,
  openPage,
  waitSettled,
  results,
  dropFiles,
  readNpyF32,
  seconds,
} from "./lib.mjs";

const args = parseArgs();
for (const k of ["dist", "bundle", "photos", "work"]) {
  if (!args[k]) throw new Error(`missing --${k}`);
}
const work = args.work;
const TOL = 1e-4;

const photos = fs.readdirSync(args.photos).filter((f) => !f.startsWith(".")).sort();
const expected = new Map(
  JSON.parse(fs.readFileSync(path.join(work, "predict.json"), "utf8")).map((r) => [
    path.basename(r.file),
    r,
  ]),
);

let failures = 0;
const failed = (msg) => {
  failures += 1;
  console.log(`  FAIL ${msg}`);
};
const ok = (msg) => console.log(`  ok   ${msg}`);

// A broken bundle: valid JSON, a weights file of the wrong network.
const broken = path.join(work, "broken-bundle");
fs.mkdirSync(broken, { recursive: true });
fs.writeFileSync(path.join(broken, "petal.json"), "{ this is not json");

const extra = { photos: args.photos, batch: path.join(work, "batch"), broken };
let server;
if (args.petal) {
  // `petal serve` serves the page folder and the bundle only: the rest goes into the page.
  for (const [name, dir] of Object.entries(extra)) {
    fs.cpSync(dir, path.join(args.dist, name), { recursive: true });
  }
  server = await servePetal({ petal: args.petal, page: args.dist, model: args.bundle });
  console.log(`served by petal serve at ${server.base}`);
} else {
  server = await serve({
    "/": args.dist,
    "/model/": args.bundle,
    ...Object.fromEntries(Object.entries(extra).map(([name, dir]) => [`/${name}/`, dir])),
  });
}
const page_url = (query = "") => `${server.base}/index.html${query}`;

// Compares the page's results with `petal predict --json` (matched by file base name).
function compare(label, got) {
  let maxDiff = 0;
  let bad = 0;
  for (const r of got) {
    const want = expected.get(path.basename(r.file));
    if (!want) {
      failed(`${label}: no CLI answer for ${r.file}`);
      bad++;
      continue;
    }
    if (r.error || !r.top) {
      failed(`${label}: ${r.file} failed on the page: ${r.error}`);
      bad++;
      continue;
    }
    const page = new Map(r.top.map((t) => [t.label, t.prob]));
    for (const t of want.top) {
      const p = page.get(t.label);
      const diff = p === undefined ? Infinity : Math.abs(p - t.prob);
      maxDiff = Math.max(maxDiff, diff);
      if (!(diff <= TOL)) {
        failed(`${label}: ${r.file} ${t.label}: page ${p}, CLI ${t.prob}`);
        bad++;
      }
    }
    // Top-1 must agree unless the CLI's first two are closer than the tolerance.
    const [a, b] = want.top;
    if (r.label !== a.label && !(b && r.label === b.label && a.prob - b.prob <= TOL)) {
      failed(`${label}: ${r.file} top-1 ${r.label}, CLI ${a.label}`);
      bad++;
    }
    if (Math.abs(r.prob - page.get(r.label)) > 0) failed(`${label}: ${r.file} data-prob != top[0]`);
  }
  return { maxDiff, bad };
}

function timingSummary(got) {
  const ok = got.filter((r) => !r.error);
  const med = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.floor(s.length / 2)] : NaN;
  };
  return `median preprocessing ${med(ok.map((r) => r.preprocessMs)).toFixed(1)} ms, inference ${med(
    ok.map((r) => r.inferenceMs),
  ).toFixed(1)} ms per image`;
}

async function section(name, fn) {
  const t0 = performance.now();
  console.log(`\n${name}`);
  try {
    await fn();
  } catch (e) {
    failed(`${name}: ${e.stack || e}`);
  }
  console.log(`  (${seconds(performance.now() - t0)})`);
}

function dumpLog(page) {
  if (failures && page?.log?.length) {
    console.log("  page console:\n    " + page.log.slice(-30).join("\n    "));
  }
}

// ---- Chromium with WebGPU (SwiftShader) --------------------------------------------------
let gpu = await launch({ webgpu: true });
let page;

await section("WebGPU: page loads the bundle on WebGPU", async () => {
  page = await openPage(gpu.context, page_url());
  const s = await waitSettled(page);
  if (s.state !== "ready") throw new Error(`page state ${s.state}: ${s.status}`);
  s.backend === "webgpu" ? ok("data-backend=webgpu") : failed(`data-backend=${s.backend}`);
  s.modelSource === "network" ? ok("first visit downloads the bundle") : failed(`source ${s.modelSource}`);
  const bar = await page.evaluate(() => getComputedStyle(document.getElementById("progress-wrap")).display);
  bar === "none" ? ok("the download bar is gone once the model is ready") : failed(`download bar display ${bar}`);
  console.log(`  model ready in ${seconds(s.loadMs)} after download (includes one warm-up pass)`);
});

await section("wasm preprocessing is byte-identical to `petal preprocess`", async () => {
  let same = 0;
  for (const photo of photos) {
    const npy = readNpyF32(path.join(work, "pre", `${photo}.npy`));
    const want = crypto.createHash("sha256").update(npy.data).digest("hex");
    const got = await page.evaluate(async (url) => {
      const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
      const t = window.wasmBindings.preprocess(bytes, 256, 224);
      const raw = new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
      const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
      return { len: t.length, hash: [...hash].map((b) => b.toString(16).padStart(2, "0")).join("") };
    }, `/photos/${encodeURIComponent(photo)}`);
    if (got.len !== 3 * 224 * 224) failed(`${photo}: ${got.len} values`);
    else if (got.hash !== want) failed(`${photo}: wasm tensor differs from the native one`);
    else same++;
  }
  same === photos.length
    ? ok(`${same}/${photos.length} photos: identical [3,224,224] f32 bytes`)
    : failed(`${same}/${photos.length} identical`);
});

await section("WebGPU: photos from the file picker equal `petal predict`", async () => {
  await page.setInputFiles(
    "#file-input",
    photos.map((p) => path.join(args.photos, p)),
  );
  const got = await results(page, photos.length);
  const { maxDiff, bad } = compare("webgpu", got);
  if (!bad) ok(`${got.length} photos, max |Δprob| ${maxDiff.toExponential(2)} (≤ ${TOL})`);
  console.log(`  ${timingSummary(got)}`);
});

await section("Second visit: the bundle comes from the Cache API", async () => {
  const before = server.hits.get("/model/model.bpk") || 0;
  await page.reload();
  const s = await waitSettled(page);
  const after = server.hits.get("/model/model.bpk") || 0;
  s.state === "ready" && s.modelSource === "cache" && after === before
    ? ok("reload: weights revalidated (304), not downloaded again")
    : failed(`reload: state ${s.state}, source ${s.modelSource}, downloads ${before} → ${after}`);
});

await section("Batch: a folder with bad files, error rows, CSV equals `petal score`", async () => {
  await page.setInputFiles("#folder-input", path.join(work, "batch"));
  const count = await page.evaluate(() => document.querySelectorAll("#results .result").length);
  const got = await results(page, count);
  const errors = got.filter((r) => r.error).map((r) => r.file).sort();
  JSON.stringify(errors) === JSON.stringify(["broken.jpg", "notes.png"])
    ? ok(`error rows for ${errors.join(", ")}: ${got.find((r) => r.error).error}`)
    : failed(`error rows: ${JSON.stringify(errors)}`);
  const tableErrors = await page.evaluate(() =>
    [...document.querySelectorAll("#batch-table tr.failed")].map((r) => r.dataset.file).sort(),
  );
  JSON.stringify(tableErrors) === JSON.stringify(errors)
    ? ok("the table marks the same rows as failed")
    : failed(`table error rows ${JSON.stringify(tableErrors)}`);
  const { bad } = compare("batch", got.filter((r) => !r.error));
  if (!bad) ok(`${got.length - errors.length} good rows equal \`petal predict\``);
  if (!got.some((r) => r.file === "more/sk_flower.jpg")) failed("subfolder file not named more/sk_flower.jpg");

  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-csv")]);
  const csv = fs.readFileSync(await download.path(), "utf8");
  const want = fs.readFileSync(path.join(work, "score.csv"), "utf8");
  if (csv === want) {
    ok(`download CSV is byte-identical to \`petal score\` (${want.trim().split("\n").length - 1} rows)`);
  } else {
    // Same files, labels and header; probabilities may differ in the sixth decimal between
    // the GPU and the CLI's CPU.
    const rows = (s) => s.trim().split("\n").map((l) => l.split(","));
    const [g, w] = [rows(csv), rows(want)];
    const same =
      g.length === w.length &&
      g.every((r, i) =>
        i === 0
          ? r.join() === w[0].join()
          : r[0] === w[i][0] && r[1] === w[i][1] && Math.abs(Number(r[2]) - Number(w[i][2])) <= TOL,
      );
    same
      ? ok("download CSV equals `petal score` (same rows and labels; probabilities within 1e-4)")
      : failed(`CSV differs:\n--- page\n${csv}--- petal score\n${want}`);
  }
});

await section("A missing or broken bundle says so", async () => {
  for (const [query, text] of [
    ["?model=missing/", "No model bundle found"],
    ["?model=broken/", "is broken"],
  ]) {
    const p = await openPage(gpu.context, page_url(query));
    const s = await waitSettled(p);
    s.state === "error" && s.status.includes(text)
      ? ok(`${query}: "${s.status.slice(0, 90)}…"`)
      : failed(`${query}: state ${s.state}, status "${s.status}"`);
    await p.close();
  }
});
dumpLog(page);
await gpu.browser.close();

// ---- Chromium without WebGPU: the CPU fallback --------------------------------------------
const cpu = await launch({ webgpu: false });
await section("No WebGPU: CPU fallback, dropped photos equal `petal predict`", async () => {
  page = await openPage(cpu.context, page_url());
  const s = await waitSettled(page);
  if (s.state !== "ready") throw new Error(`page state ${s.state}: ${s.status}`);
  s.backend === "cpu" ? ok("data-backend=cpu") : failed(`data-backend=${s.backend}`);
  const shown = await page.evaluate(() => document.getElementById("info-backend").textContent);
  /not available/.test(shown) ? ok(`the page says: "${shown}"`) : failed(`backend text "${shown}"`);
  await dropFiles(page, "/photos/", photos);
  const got = await results(page, photos.length);
  const { maxDiff, bad } = compare("cpu", got);
  if (!bad) ok(`${got.length} photos, max |Δprob| ${maxDiff.toExponential(2)} (≤ ${TOL})`);
  console.log(`  ${timingSummary(got)}`);
});
dumpLog(page);
await cpu.browser.close();
await server.close();

if (failures) {
  console.log(`\n${failures} browser check(s) failed`);
  process.exit(1);
}
console.log("\nall browser checks passed");
