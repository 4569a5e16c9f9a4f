// Petal's page script: fetches the bundle (with a progress bar and the Cache API), hands it to
// the inference worker (web/worker.js, which owns the wasm model) and draws results. All
// preprocessing, inference, softmax/top-k, heat maps, the backend choice and the CSV format
// come from Rust (web/src, petal-shared) — nothing here computes on pixels.

const CACHE_NAME = "petal-bundles-v1";
const TOP_K = 5;
// Longest side of the heat-map layers drawn over the photos (they are shown as thumbnails).
const HEAT_SIDE = 320;
const body = document.body;
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const modelBase = new URL(withSlash(params.get("model") || "model/"), location.href);
// `?backend=cpu` forces the CPU path, `?backend=webgpu` WebGPU even on a software adapter
// (the browser tests check WebGPU's answers that way); without it the page picks (backend.rs).
const requestedBackend = params.get("backend") || "";

const state = {
  ready: false,
  backend: null,
  meta: null,
  classes: [],
  rows: [], // {file, label, prob} for the CSV, in arrival order
  jobs: [], // photos waiting for the worker: {item, card}
  running: false,
  pending: 0,
  pasted: 0,
  times: [], // per-image compute time (ms) of every classified photo, for the device panel
  batch: null, // {start, done} of the photos since the queue was last empty
  cams: new Map(), // file → {maps, gradMaps, width, height, card, shown}: the top classes' maps
  camMethod: "cam", // which maps the heat layers show: "cam" or "grad-cam"
};
// For scripts and tests: the page's state and the wasm bindings.
window.petal = state;

function withSlash(s) {
  return s.endsWith("/") ? s : s + "/";
}

function setState(s) {
  body.dataset.state = s;
}

function status(text) {
  $("status").textContent = text;
}

function fail(message) {
  setState("error");
  status(message);
  $("status").classList.add("error");
  $("progress-wrap").hidden = true;
}

async function bindings() {
  if (window.wasmBindings) return window.wasmBindings;
  return new Promise((resolve) =>
    addEventListener("TrunkApplicationStarted", () => resolve(window.wasmBindings), { once: true }),
  );
}

// ---- The inference worker -----------------------------------------------------------------

// The worker loads the same wasm module as this page: trunk names its two files (with content
// hashes) in the preload links it puts in <head>.
function wasmUrls() {
  const js = document.querySelector('link[rel="modulepreload"][href$=".js"]');
  const wasm = document.querySelector('link[rel="preload"][href$=".wasm"]');
  if (!js || !wasm) throw new Error("the page was built without its wasm preload links");
  return { glue: js.href, wasm: wasm.href };
}

// A worker that has stopped (an uncaught error in it, or a trap in its wasm module) answers
// nothing more: its pending calls fail with `fatal` set and `stopped` is true until `start`.
const worker = {
  w: null,
  nextId: 0,
  waiting: new Map(),
  stopped: false,
  start() {
    if (this.w) this.w.terminate();
    this.stopped = false;
    const w = new Worker(new URL("worker.js", location.href), { type: "module" });
    this.w = w;
    w.onmessage = ({ data }) => {
      const call = this.waiting.get(data.id);
      this.waiting.delete(data.id);
      if (data.fatal) this.stopped = true;
      data.ok ? call.resolve(data.value) : call.reject(Object.assign(new Error(data.error), { fatal: !!data.fatal }));
    };
    w.onerror = (e) => {
      e.preventDefault();
      if (w !== this.w) return;
      this.stopped = true;
      const error = Object.assign(new Error(`the inference worker stopped: ${e.message || "no message"}`), {
        fatal: true,
      });
      for (const call of this.waiting.values()) call.reject(error);
      this.waiting.clear();
    };
  },
  // One request; `transfer` moves buffers (weights, photo bytes, frames) instead of copying.
  call(op, args, transfer = []) {
    return new Promise((resolve, reject) => {
      const id = ++this.nextId;
      this.waiting.set(id, { resolve, reject });
      this.w.postMessage({ id, op, ...args }, transfer);
    });
  },
};

state.worker = worker;

// A new worker compiling the page's wasm module; the promise is awaited later, so an early
// failure must not go unhandled meanwhile.
function startWorker() {
  worker.start();
  const ready = worker.call("init", wasmUrls());
  ready.catch(() => {});
  return ready;
}

// ---- Downloading the bundle -------------------------------------------------------------

async function openCache() {
  try {
    return "caches" in self ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null; // e.g. an opaque origin: work without the cache
  }
}

// Fetches `url`, revalidating a cached copy with its validators: an unchanged file costs one
// 304 and no download. `onProgress(loaded, total)` follows the body as it streams in.
async function fetchCached(cache, url, onProgress) {
  const cached = cache ? await cache.match(url) : undefined;
  const headers = {};
  if (cached) {
    const etag = cached.headers.get("ETag");
    const modified = cached.headers.get("Last-Modified");
    if (etag) headers["If-None-Match"] = etag;
    if (modified) headers["If-Modified-Since"] = modified;
  }
  let response;
  try {
    // no-store: the Cache API holds the one copy; the HTTP cache would keep a second.
    response = await fetch(url, { headers, cache: "no-store" });
  } catch (e) {
    if (cached) return { bytes: new Uint8Array(await cached.arrayBuffer()), source: "cache" };
    throw new Error(`cannot reach ${url}: ${e.message}`);
  }
  if (response.status === 304 && cached) {
    return { bytes: new Uint8Array(await cached.arrayBuffer()), source: "cache" };
  }
  if (!response.ok) {
    throw new Error(`${url} answered HTTP ${response.status} ${response.statusText}`.trim());
  }
  // Content-Length counts the bytes on the wire: with a Content-Encoding it is not the size
  // of the body we read, so the bar shows bytes received instead of a wrong fraction.
  const encoded = (response.headers.get("Content-Encoding") || "identity") !== "identity";
  const total = encoded ? 0 : Number(response.headers.get("Content-Length")) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress?.(loaded, total);
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  chunks.length = 0;
  if (cache) {
    const keep = new Headers();
    for (const h of ["Content-Type", "ETag", "Last-Modified"]) {
      const v = response.headers.get(h);
      if (v) keep.set(h, v);
    }
    try {
      await cache.put(url, new Response(bytes, { headers: keep }));
    } catch (e) {
      console.warn("petal: cannot cache", url, e); // quota: the page still works
    }
  }
  return { bytes, source: "network" };
}

// Download progress. With a known length the bar fills; without one (no Content-Length, or a
// compressed response) it is indeterminate and the text counts the bytes received.
function showProgress(loaded, total) {
  const wrap = $("progress-wrap");
  const bar = $("progress");
  wrap.hidden = false;
  if (total) {
    bar.max = total;
    bar.value = loaded;
    wrap.dataset.mode = "determinate";
    $("progress-text").textContent = `${formatBytes(loaded)} / ${formatBytes(total)}`;
  } else {
    bar.removeAttribute("value"); // an indeterminate <progress>
    wrap.dataset.mode = "indeterminate";
    $("progress-text").textContent = `${formatBytes(loaded)} received`;
  }
}

function formatBytes(n) {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

async function loadModel() {
  $("model-url").textContent = modelBase.href;
  // Cold-start milestones, in ms since the navigation started (scripts/bench-web reads them).
  state.startup = {};
  // Three things at once: the worker compiles its wasm, this page compiles its own (for the
  // file rules, the CSV and reading petal.json), and petal.json downloads.
  const workerReady = startWorker();
  const pageWasm = bindings().then((wasm) => {
    state.startup.wasm = performance.now();
    return wasm;
  });
  const cache = await openCache();
  const metaUrl = new URL("petal.json", modelBase).href;

  status("Loading the model description…");
  let meta, metaBytes;
  try {
    metaBytes = (await fetchCached(cache, metaUrl)).bytes;
  } catch (e) {
    throw new Error(
      `No model bundle found: ${e.message}. Put petal.json and the weights file next to the ` +
        `page in model/, or open the page with ?model=URL.`,
    );
  }
  const wasm = await pageWasm;
  state.wasm = wasm;
  try {
    meta = JSON.parse(wasm.parseMeta(metaBytes));
  } catch (e) {
    throw new Error(`The model bundle at ${modelBase.href} is broken: ${errText(e)}`);
  }
  state.meta = meta;
  state.classes = meta.classes;
  $("info-arch").textContent = `${meta.arch}, ${meta.image_size}×${meta.image_size} input, ${meta.precision} weights`;
  $("info-classes").textContent = `${meta.classes.length}: ${meta.classes.join(", ")}`;
  $("info-backend").textContent = "…";
  $("model-info").hidden = false;

  // The weights move to the worker (no copy stays here) and are consumed by wasm there.
  const loadWorker = (buffer) =>
    worker.call("load", { meta: metaBytes, weights: buffer, requested: requestedBackend }, [buffer]);

  status(`Downloading ${meta.weights}…`);
  const weightsUrl = new URL(meta.weights, modelBase).href;
  let weights;
  try {
    weights = await fetchCached(cache, weightsUrl, showProgress);
  } catch (e) {
    throw new Error(`Cannot download the model weights: ${e.message}`);
  }
  body.dataset.modelSource = weights.source;
  $("progress-wrap").hidden = true;
  state.modelBytes = weights.bytes.length;
  state.startup.downloaded = performance.now();

  status("Preparing the model…");
  const t0 = performance.now();
  let loaded;
  try {
    state.startup.workerWasmMs = (await workerReady).wasmMs;
    const buffer = weights.bytes.buffer;
    weights = null;
    loaded = await loadWorker(buffer);
  } catch (e) {
    throw new Error(`The model bundle at ${modelBase.href} cannot be loaded: ${errText(e)}`);
  }
  state.loadMs = performance.now() - t0;
  // A stopped worker is replaced by a new one with the same model: the weights come back from
  // the Cache API (revalidated, not downloaded again) or, without it, from the server.
  state.restartWorker = async () => {
    const ready = startWorker();
    const { bytes } = await fetchCached(cache, weightsUrl);
    await ready;
    await loadWorker(bytes.buffer);
    state.restarts = (state.restarts || 0) + 1;
    body.dataset.workerRestarts = String(state.restarts);
  };
  state.startup.modelMs = loaded.loadMs;
  state.backend = loaded.backend;
  state.dispatch = dispatchSize(loaded.backend);
  state.adapter = loaded.adapter;
  state.backendReason = loaded.reason;
  body.dataset.backend = loaded.backend;
  $("info-backend").textContent =
    loaded.backend === "webgpu"
      ? `WebGPU — ${loaded.reason}`
      : `CPU (WebAssembly) — ${loaded.reason}`;
  aboutDevice();
  const from = body.dataset.modelSource === "cache" ? " (from the browser cache)" : "";
  status(`Ready${from}. Drop photos to classify them.`);
  for (const id of ["file-input", "folder-input", "camera-start"]) $(id).disabled = false;
  state.ready = true;
  state.startup.ready = performance.now();
  setState("ready");
}

// Photos per network pass. On WebGPU a pass over several photos dispatches each kernel once
// for all of them and reads back once: passes of 8 gave 1.7× the images/s of single photos
// for ResNet-18 even on a software adapter (scripts/bench-web). On the CPU the folded network
// gains about 6% from passes of 4, too little to make each photo wait for three others, so
// one photo per pass shows each result soonest. `?batch=N` sets it (the benchmark compares).
function dispatchSize(backend) {
  const asked = Number(params.get("batch"));
  if (Number.isInteger(asked) && asked >= 1) return Math.min(asked, 32);
  return backend === "webgpu" ? 8 : 1;
}

// ---- About this device ------------------------------------------------------------------

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// The "about this device" panel: what computes and how fast it has been so far. Every photo
// is warm: loading the model ran one pass already, which compiled the GPU shaders.
function aboutDevice() {
  const a = state.adapter;
  const sorted = [...state.times].sort((x, y) => x - y);
  const p50 = percentile(sorted, 50);
  const p90 = percentile(sorted, 90);
  const ms = (v) => (Number.isFinite(v) ? `${v.toFixed(0)} ms` : "–");
  const rate = state.rate ? `${state.rate.toFixed(2)} images/s` : "–";
  const facts = {
    adapter: a ? `${[a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "unnamed"}${a.isFallbackAdapter ? " (software)" : ""}` : "no WebGPU adapter",
    backend: state.backend === "webgpu" ? "WebGPU" : "CPU (WebAssembly)",
    f16: a ? (a.shaderF16 ? "yes (shader-f16)" : "no — f16 weights are widened to f32 on load") : "–",
    latency: `${ms(p50)} p50, ${ms(p90)} p90 (${sorted.length} photos)`,
    rate,
    size: `${formatBytes(state.modelBytes)} (${state.meta.precision} weights)`,
  };
  for (const [key, text] of Object.entries(facts)) $(`about-${key}`).textContent = text;
  const panel = $("about");
  panel.hidden = false;
  Object.assign(panel.dataset, {
    backend: state.backend,
    adapter: a ? facts.adapter : "",
    fallbackAdapter: String(Boolean(a?.isFallbackAdapter)),
    shaderF16: String(Boolean(a?.shaderF16)),
    p50: Number.isFinite(p50) ? p50.toFixed(2) : "",
    p90: Number.isFinite(p90) ? p90.toFixed(2) : "",
    imagesPerSecond: state.rate ? state.rate.toFixed(3) : "",
    modelBytes: String(state.modelBytes),
  });
}

function errText(e) {
  return e && e.message ? e.message : String(e);
}

// ---- Classifying ------------------------------------------------------------------------

// `items`: [{file: File, path: string}]. They run after earlier batches, `state.dispatch`
// photos per network pass; the worker gets the next photos only when the previous pass is
// done, so "Cancel" stops after the pass under way.
function enqueue(items) {
  if (!state.ready || !items.length) return;
  $("batch").hidden = false;
  state.pending += items.length;
  if (!state.batch) state.batch = { start: performance.now(), done: 0 };
  setState("busy");
  $("cancel").hidden = false;
  for (const item of items) state.jobs.push({ item, card: placeholder(item.file, item.path) });
  summary();
  pump();
}

async function pump() {
  if (state.running) return;
  state.running = true;
  while (state.jobs.length) {
    const group = state.jobs.splice(0, state.dispatch);
    await classifyGroup(group);
    state.pending -= group.length;
    state.batch.done += group.length;
    state.rate = (state.batch.done * 1000) / (performance.now() - state.batch.start);
    summary();
    aboutDevice();
  }
  state.running = false;
  idle();
}

function idle() {
  state.batch = null;
  $("cancel").hidden = true;
  if (state.pending === 0) setState("ready");
}

// Drops the photos not yet sent to the worker; the pass under way finishes.
function cancelBatch() {
  const dropped = state.jobs.splice(0);
  for (const { card } of dropped) {
    for (const el of [card.li, card.tr]) {
      el.classList.remove("pending");
      el.classList.add("cancelled");
      el.dataset.cancelled = "true";
    }
    card.msg.textContent = "Cancelled";
    card.tr.cells[1].textContent = "Cancelled";
  }
  state.pending -= dropped.length;
  summary();
  if (!state.running) idle();
}

function placeholder(file, path) {
  const li = document.createElement("li");
  li.className = "result pending";
  li.dataset.file = path;
  const frame = document.createElement("div");
  frame.className = "photo";
  const img = document.createElement("img");
  img.alt = `Photo ${path}`;
  img.loading = "lazy";
  // Decoding a large photo for its thumbnail must not hold up the page either.
  img.decoding = "async";
  img.src = URL.createObjectURL(file);
  img.onerror = () => img.classList.add("broken");
  frame.append(img);
  const info = document.createElement("div");
  info.className = "info";
  const name = document.createElement("h3");
  name.textContent = path;
  const msg = document.createElement("p");
  msg.className = "msg";
  msg.textContent = "Waiting…";
  info.append(name, msg);
  li.append(frame, info);
  $("results").append(li);

  const tr = document.createElement("tr");
  tr.className = "batch-row pending";
  tr.dataset.file = path;
  const td = (t) => {
    const c = document.createElement("td");
    c.textContent = t;
    return c;
  };
  tr.append(td(path), td("…"), td(""));
  $("batch-table").tBodies[0].append(tr);
  return { li, tr, msg, info, frame };
}

// One network pass over a group of queued photos. A file the browser cannot read, or one that
// does not decode, fails alone; the rest of the group is classified.
async function classifyGroup(group) {
  for (const { card } of group) card.msg.textContent = "Classifying…";
  const read = await Promise.all(
    group.map(({ item }) => item.file.arrayBuffer().then((bytes) => ({ bytes }), (e) => ({ error: errText(e) }))),
  );
  const files = read.filter((r) => r.bytes).map((r) => r.bytes);
  const heat = { maxSide: HEAT_SIDE, method: state.camMethod };
  let outs = [];
  if (files.length) {
    try {
      if (worker.stopped) await state.restartWorker();
      outs = await worker.call("classifyBatch", { files, k: TOP_K, heat }, files);
    } catch (e) {
      outs = e.fatal
        ? await oneByOne(group.filter((_, i) => read[i].bytes), heat)
        : // The pass itself failed (the device was lost, say): each of its photos says why.
          files.map(() => ({ error: errText(e) }));
    }
  }
  let next = 0;
  group.forEach(({ item, card }, i) => {
    const out = read[i].bytes ? outs[next++] : read[i];
    if (out.error) showFailure(card, out.error);
    else showResult(item.path, card, out);
  });
}

// The worker stopped during a pass (a photo crashed the wasm module, or its memory ran out):
// each photo of the pass goes alone to a new worker, so that only a photo that stops it again
// fails, with that as its error, and the page goes on with the next ones.
async function oneByOne(group, heat) {
  const outs = [];
  for (const { item } of group) {
    try {
      if (worker.stopped) await state.restartWorker();
      const bytes = await item.file.arrayBuffer();
      outs.push((await worker.call("classifyBatch", { files: [bytes], k: TOP_K, heat }, [bytes]))[0]);
    } catch (e) {
      outs.push({
        error: e.fatal ? `this photo stopped the classifier, which was restarted (${errText(e)})` : errText(e),
      });
    }
  }
  return outs;
}

function showFailure(card, message) {
  for (const el of [card.li, card.tr]) {
    el.classList.remove("pending");
    el.classList.add("failed");
    el.dataset.error = message;
  }
  card.msg.textContent = `Cannot classify: ${message}`;
  card.tr.cells[1].textContent = `Error: ${message}`;
  card.tr.cells[1].colSpan = 2;
  card.tr.cells[2].remove();
}

// A classified photo's card: top classes, timings, the heat map of the top class.
function showResult(path, card, out) {
  state.times.push(out.preprocess_ms + out.inference_ms);
  const best = out.top[0];
  for (const el of [card.li, card.tr]) {
    el.classList.remove("pending");
    el.dataset.label = best.label;
    el.dataset.prob = String(best.prob);
  }
  card.li.dataset.top = JSON.stringify(out.top.map(({ label, prob }) => ({ label, prob })));
  card.li.dataset.preprocessMs = out.preprocess_ms.toFixed(2);
  card.li.dataset.inferenceMs = out.inference_ms.toFixed(2);
  card.li.dataset.dispatch = String(out.batch);
  state.rows.push([path, best.label, best.prob]);
  state.cams.set(path, {
    maps: out.maps,
    gradMaps: out.grad_maps,
    width: out.width,
    height: out.height,
    labels: out.top.map((t) => t.label),
    card,
    shown: 0, // which of the top classes the heat layer shows
  });
  if (out.heat) showHeat(card, best.label, out.heat);

  card.msg.textContent = `${out.preprocess_ms.toFixed(0)} ms preprocessing, ${out.inference_ms.toFixed(0)} ms on ${
    state.backend === "webgpu" ? "the GPU" : "the CPU"
  }${out.batch > 1 ? ` (its share of a pass over ${out.batch} photos)` : ""}`;
  const list = topList(out.top);
  // Clicking a class shows where its evidence is (the map comes from the same pass).
  [...list.children].forEach((li, i) => {
    li.tabIndex = 0;
    li.title = `Show where the evidence for ${out.top[i].label} is`;
    const pick = () => {
      const cam = state.cams.get(path);
      cam.shown = i;
      redrawHeat(cam);
    };
    li.addEventListener("click", pick);
    li.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), pick()));
  });
  card.info.insertBefore(list, card.msg);
  card.tr.cells[1].textContent = best.label;
  card.tr.cells[2].textContent = `${(best.prob * 100).toFixed(1)}%`;
}

// Draws a card's heat layer again from its maps (another class clicked, or the other method).
function redrawHeat(cam) {
  const maps = state.camMethod === "grad-cam" ? cam.gradMaps : cam.maps;
  const png = state.wasm.heatPng(
    JSON.stringify(maps[cam.shown]), cam.width, cam.height, state.meta.resize, state.meta.image_size, HEAT_SIDE,
  );
  showHeat(cam.card, cam.labels[cam.shown], png);
}

// Lays a heat-map PNG over a card's photo; `data-cam` is its blob URL, `data-cam-class` the
// class it explains and `data-cam-method` how ("cam" or "grad-cam").
function showHeat(card, label, png) {
  let heat = card.frame.querySelector("img.heat");
  if (!heat) {
    heat = document.createElement("img");
    heat.className = "heat";
    heat.alt = "";
    heat.decoding = "async";
    card.frame.append(heat);
    $("cam-controls").hidden = false;
  } else {
    URL.revokeObjectURL(heat.src);
  }
  heat.src = URL.createObjectURL(new Blob([png], { type: "image/png" }));
  heat.title = `Where the evidence for ${label} is`;
  card.li.dataset.cam = heat.src;
  card.li.dataset.camClass = label;
  card.li.dataset.camMethod = state.camMethod;
  for (const li of card.info.querySelectorAll(".top li")) {
    li.classList.toggle("explained", li.querySelector(".label").textContent === label);
  }
}

// The top-k classes as labelled bars.
function topList(top) {
  const list = document.createElement("ol");
  list.className = "top";
  for (const { label, prob } of top) {
    const li = document.createElement("li");
    const pct = (prob * 100).toFixed(1);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${pct} percent`);
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(100, prob * 100))}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = `${pct}%`;
    li.append(name, bar, value);
    list.append(li);
  }
  return list;
}

function summary() {
  const done = $("results").querySelectorAll(".result:not(.pending):not(.cancelled)").length;
  const failed = $("results").querySelectorAll(".result.failed").length;
  const cancelled = $("results").querySelectorAll(".result.cancelled").length;
  const text = `${done} classified${failed ? `, ${failed} failed` : ""}${cancelled ? `, ${cancelled} cancelled` : ""}${
    state.pending ? `, ${state.pending} to go` : ""
  }`;
  $("batch-summary").textContent = text;
}

function downloadCsv() {
  const csv = state.wasm.scoreCsv(JSON.stringify(state.rows));
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
  a.download = "petal-scores.csv";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function clearResults() {
  cancelBatch();
  for (const img of $("results").querySelectorAll("img")) URL.revokeObjectURL(img.src);
  $("results").replaceChildren();
  state.cams.clear();
  $("batch-table").tBodies[0].replaceChildren();
  state.rows = [];
  $("batch-summary").textContent = "";
  $("batch").hidden = true;
}

// ---- Input: picker, folder, drag and drop, paste ----------------------------------------

// Files from a chosen or dropped folder, as `petal score --images FOLDER` takes them: images
// only, hidden entries skipped, named relative to the folder, in its row order. The rules are
// petal-shared's (`files.rs`), called through wasm. `topIsFolder`: the paths start with the
// folder's own name, which the row names leave out.
function folderItems(items, topIsFolder) {
  const w = state.wasm;
  return items
    .map(({ file, path }) => ({ file, path: topIsFolder ? w.folderRelative(path) : path }))
    .filter(({ path }) => !w.isHidden(path) && w.isImageName(path))
    .sort((a, b) => w.comparePaths(a.path, b.path));
}

async function readDirectory(dirEntry) {
  const reader = dirEntry.createReader();
  const entries = [];
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    entries.push(...batch);
  }
  return entries;
}

async function filesFromEntry(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ file, fullPath: entry.fullPath });
  } else if (entry.isDirectory) {
    for (const child of await readDirectory(entry)) await filesFromEntry(child, out);
  }
}

async function onDrop(event) {
  event.preventDefault();
  $("dropzone").classList.remove("over");
  const dt = event.dataTransfer;
  const entries = [...(dt.items || [])]
    .filter((i) => i.kind === "file")
    .map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  let items;
  if (entries.length && entries.every(Boolean) && entries.some((e) => e.isDirectory)) {
    const found = [];
    for (const e of entries) await filesFromEntry(e, found);
    const oneFolder = entries.length === 1;
    items = folderItems(
      found.map(({ file, fullPath }) => ({ file, path: fullPath.replace(/^\//, "") })),
      oneFolder,
    );
  } else {
    items = [...dt.files].map((file) => ({ file, path: file.name }));
  }
  enqueue(items);
}

function onPaste(event) {
  const files = [...(event.clipboardData?.files || [])];
  if (!files.length) return;
  event.preventDefault();
  enqueue(
    files.map((file) => {
      state.pasted += 1;
      const ext = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
      return { file, path: `pasted-${state.pasted}.${ext}` };
    }),
  );
}

function wireInput() {
  $("file-input").addEventListener("change", (e) => {
    enqueue([...e.target.files].map((file) => ({ file, path: file.name })));
    e.target.value = "";
  });
  $("folder-input").addEventListener("change", (e) => {
    const items = [...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }));
    enqueue(folderItems(items, true));
    e.target.value = "";
  });
  const zone = document.documentElement;
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    $("dropzone").classList.add("over");
  });
  zone.addEventListener("dragleave", (e) => {
    if (e.target === zone || !zone.contains(e.relatedTarget)) $("dropzone").classList.remove("over");
  });
  zone.addEventListener("drop", (e) => {
    if (!state.ready) {
      e.preventDefault();
      return;
    }
    onDrop(e).catch((err) => status(`Cannot read the dropped files: ${errText(err)}`));
  });
  document.addEventListener("paste", onPaste);
  $("download-csv").addEventListener("click", downloadCsv);
  $("clear").addEventListener("click", clearResults);
  $("cancel").addEventListener("click", cancelBatch);
  const opacity = $("cam-opacity");
  const setOpacity = () => $("results").style.setProperty("--cam-opacity", String(opacity.value / 100));
  opacity.addEventListener("input", setOpacity);
  // CAM or Grad-CAM: every card's layer is redrawn from the maps it already has, one card per
  // task so that a long list does not hold up the page; a newer switch supersedes this one.
  for (const radio of document.querySelectorAll('input[name="cam-method"]')) {
    radio.addEventListener("change", async () => {
      if (!radio.checked) return;
      state.camMethod = radio.value;
      const run = (state.camRedraw = {});
      for (const cam of [...state.cams.values()]) {
        if (state.camRedraw !== run) return;
        redrawHeat(cam);
        await new Promise((resolve) => setTimeout(resolve));
      }
    });
  }
  setOpacity();
  $("camera-start").addEventListener("click", () => startCamera().catch((e) => cameraFailed(e)));
  $("camera-stop").addEventListener("click", stopCamera);
}

// ---- Live camera ------------------------------------------------------------------------

// Frames are classified one at a time: the next frame is grabbed only when the previous
// answer is back, so a camera faster than the model skips frames instead of queueing them.
const camera = { stream: null, tracks: [], running: false, inFlight: 0, maxInFlight: 0, frames: 0, stamps: [] };
// For tests: camera tracks not yet stopped.
state.cameraTracksLive = () => camera.tracks.filter((t) => t.readyState === "live").length;

async function startCamera() {
  if (camera.running) return;
  const section = $("camera");
  section.hidden = false;
  section.dataset.state = "starting";
  $("camera-status").textContent = "Asking for the camera…";
  camera.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  camera.tracks = camera.stream.getTracks();
  const video = $("camera-video");
  video.srcObject = camera.stream;
  await video.play();
  Object.assign(camera, { running: true, inFlight: 0, maxInFlight: 0, frames: 0, stamps: [] });
  section.dataset.state = "on";
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  $("camera-status").textContent = "Classifying what the camera sees…";
  cameraLoop(video).catch((e) => cameraFailed(e));
}

function nextVideoFrame(video) {
  return new Promise((resolve) =>
    video.requestVideoFrameCallback ? video.requestVideoFrameCallback(() => resolve()) : requestAnimationFrame(() => resolve()),
  );
}

async function cameraLoop(video) {
  const section = $("camera");
  while (camera.running) {
    await nextVideoFrame(video);
    if (!camera.running) break;
    const bitmap = await createImageBitmap(video);
    camera.inFlight += 1;
    camera.maxInFlight = Math.max(camera.maxInFlight, camera.inFlight);
    let out;
    try {
      out = await worker.call("frame", { bitmap, k: TOP_K }, [bitmap]);
    } finally {
      camera.inFlight -= 1;
    }
    if (!camera.running) break; // stopped while this frame was out: do not draw it
    camera.frames += 1;
    const now = performance.now();
    camera.stamps.push(now);
    while (camera.stamps.length && camera.stamps[0] < now - 2000) camera.stamps.shift();
    const fps = camera.stamps.length > 1 ? ((camera.stamps.length - 1) * 1000) / (now - camera.stamps[0]) : 0;
    const best = out.top[0];
    $("camera-top").replaceChildren(...topList(out.top).children);
    $("camera-fps").textContent = `${fps.toFixed(1)} frames/s classified, ${(out.preprocess_ms + out.inference_ms).toFixed(0)} ms a frame`;
    Object.assign(section.dataset, {
      frames: String(camera.frames),
      fps: fps.toFixed(2),
      label: best.label,
      prob: String(best.prob),
      maxInFlight: String(camera.maxInFlight),
    });
  }
}

function stopCamera() {
  camera.running = false;
  for (const track of camera.stream?.getTracks() || []) track.stop();
  camera.stream = null;
  const video = $("camera-video");
  video.pause();
  video.srcObject = null;
  $("camera").dataset.state = "off";
  $("camera-start").hidden = false;
  $("camera-stop").hidden = true;
  $("camera-status").textContent = `Camera off (${camera.frames} frames classified).`;
}

function cameraFailed(e) {
  stopCamera();
  $("camera").dataset.state = "error";
  $("camera-status").textContent = `Cannot use the camera: ${errText(e)}`;
}

// ---- Offline --------------------------------------------------------------------------

// The service worker (sw.js) keeps the page and its wasm; the bundle is in the Cache API
// (fetchCached). `data-offline="ready"` once both are in place: the next visit works without
// a network.
async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    const registration = await navigator.serviceWorker.register("sw.js");
    // Ready once a worker has cached the page and is active; a worker whose install failed
    // (a file it could not fetch) turns "redundant" and leaves no offline copy.
    const sw = registration.installing || registration.waiting;
    if (sw) {
      await new Promise((resolve, reject) =>
        sw.addEventListener("statechange", () => {
          if (sw.state === "activated") resolve();
          if (sw.state === "redundant") reject(new Error("the service worker could not keep the page's files"));
        }),
      );
    }
    body.dataset.offline = "ready";
  } catch (e) {
    console.warn("petal: no offline copy:", e);
    body.dataset.offline = "unavailable";
  }
}

wireInput();
loadModel()
  .then(registerServiceWorker)
  .catch((e) => {
    console.error(e);
    fail(errText(e));
  });
