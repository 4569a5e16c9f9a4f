// Petal's page script: fetches the bundle (with a progress bar and the Cache API), hands bytes
// to the wasm module and draws results. All preprocessing, inference, softmax/top-k and the
// CSV format come from Rust (web/src, petal-shared) — nothing here computes on pixels.

const CACHE_NAME = "petal-bundles-v1";
const TOP_K = 5;
const body = document.body;
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const modelBase = new URL(withSlash(params.get("model") || "model/"), location.href);
// `?backend=cpu` forces the CPU fallback (benchmarks, or a misbehaving GPU driver).
const forceCpu = params.get("backend") === "cpu";

const state = {
  classifier: null,
  classes: [],
  rows: [], // {file, label, prob} for the CSV, in arrival order
  queue: Promise.resolve(),
  pending: 0,
  pasted: 0,
};
// For scripts and tests: the loaded classifier and the wasm bindings.
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

async function webgpuAvailable() {
  if (forceCpu || !navigator.gpu) return false;
  try {
    return (await navigator.gpu.requestAdapter()) !== null;
  } catch {
    return false;
  }
}

async function loadModel() {
  $("model-url").textContent = modelBase.href;
  const wasm = await bindings();
  state.wasm = wasm;
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
  try {
    meta = JSON.parse(wasm.parseMeta(metaBytes));
  } catch (e) {
    throw new Error(`The model bundle at ${modelBase.href} is broken: ${errText(e)}`);
  }
  state.classes = meta.classes;
  $("info-arch").textContent = `${meta.arch}, ${meta.image_size}×${meta.image_size} input, ${meta.precision} weights`;
  $("info-classes").textContent = `${meta.classes.length}: ${meta.classes.join(", ")}`;
  $("info-backend").textContent = "…";
  $("model-info").hidden = false;

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

  const gpu = await webgpuAvailable();
  status(gpu ? "Preparing the model on the GPU…" : "Preparing the model on the CPU…");
  const t0 = performance.now();
  try {
    // The bytes move into wasm and are consumed there; drop our reference so the weights
    // live only on the GPU (or in the CPU backend's tensors).
    const bytes = weights.bytes;
    weights = null;
    state.classifier = await wasm.Classifier.load(metaBytes, bytes, gpu);
  } catch (e) {
    throw new Error(`The model bundle at ${modelBase.href} cannot be loaded: ${errText(e)}`);
  }
  state.loadMs = performance.now() - t0;
  const backend = state.classifier.backend;
  body.dataset.backend = backend;
  $("info-backend").textContent =
    backend === "webgpu"
      ? "WebGPU (your GPU)"
      : forceCpu
        ? "CPU (WebAssembly) — WebGPU turned off with ?backend=cpu"
        : "CPU (WebAssembly) — WebGPU is not available in this browser, so this is slower";
  const from = body.dataset.modelSource === "cache" ? " (from the browser cache)" : "";
  status(`Ready${from}. Drop photos to classify them.`);
  for (const id of ["file-input", "folder-input"]) $(id).disabled = false;
  setState("ready");
}

function errText(e) {
  return e && e.message ? e.message : String(e);
}

// ---- Classifying ------------------------------------------------------------------------

// `items`: [{file: File, path: string}]. Runs one at a time, after earlier batches.
function enqueue(items) {
  if (!state.classifier || !items.length) return;
  $("batch").hidden = false;
  state.pending += items.length;
  setState("busy");
  const cards = items.map(({ file, path }) => placeholder(file, path));
  state.queue = state.queue.then(async () => {
    for (let i = 0; i < items.length; i++) {
      await classifyOne(items[i], cards[i]);
      state.pending -= 1;
      summary();
    }
    if (state.pending === 0) setState("ready");
  });
}

function placeholder(file, path) {
  const li = document.createElement("li");
  li.className = "result pending";
  li.dataset.file = path;
  const img = document.createElement("img");
  img.alt = `Photo ${path}`;
  img.loading = "lazy";
  img.src = URL.createObjectURL(file);
  img.onerror = () => img.classList.add("broken");
  const info = document.createElement("div");
  info.className = "info";
  const name = document.createElement("h3");
  name.textContent = path;
  const msg = document.createElement("p");
  msg.className = "msg";
  msg.textContent = "Waiting…";
  info.append(name, msg);
  li.append(img, info);
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
  return { li, tr, msg, info };
}

async function classifyOne({ file, path }, card) {
  card.msg.textContent = "Classifying…";
  let out;
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    out = JSON.parse(await state.classifier.classify(bytes, TOP_K));
  } catch (e) {
    const message = errText(e);
    for (const el of [card.li, card.tr]) {
      el.classList.remove("pending");
      el.classList.add("failed");
      el.dataset.error = message;
    }
    card.msg.textContent = `Cannot classify: ${message}`;
    card.tr.cells[1].textContent = `Error: ${message}`;
    card.tr.cells[1].colSpan = 2;
    card.tr.cells[2].remove();
    return;
  }
  const best = out.top[0];
  for (const el of [card.li, card.tr]) {
    el.classList.remove("pending");
    el.dataset.label = best.label;
    el.dataset.prob = String(best.prob);
  }
  card.li.dataset.top = JSON.stringify(out.top.map(({ label, prob }) => ({ label, prob })));
  card.li.dataset.preprocessMs = out.preprocess_ms.toFixed(2);
  card.li.dataset.inferenceMs = out.inference_ms.toFixed(2);
  state.rows.push([path, best.label, best.prob]);

  card.msg.textContent = `${out.preprocess_ms.toFixed(0)} ms preprocessing, ${out.inference_ms.toFixed(0)} ms on ${
    state.classifier.backend === "webgpu" ? "the GPU" : "the CPU"
  }`;
  const list = document.createElement("ol");
  list.className = "top";
  for (const { label, prob } of out.top) {
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
  card.info.insertBefore(list, card.msg);
  card.tr.cells[1].textContent = best.label;
  card.tr.cells[2].textContent = `${(best.prob * 100).toFixed(1)}%`;
}

function summary() {
  const done = $("results").querySelectorAll(".result:not(.pending)").length;
  const failed = $("results").querySelectorAll(".result.failed").length;
  const text = `${done} classified${failed ? `, ${failed} failed` : ""}${state.pending ? `, ${state.pending} to go` : ""}`;
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
  for (const img of $("results").querySelectorAll("img")) URL.revokeObjectURL(img.src);
  $("results").replaceChildren();
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
    if (!state.classifier) {
      e.preventDefault();
      return;
    }
    onDrop(e).catch((err) => status(`Cannot read the dropped files: ${errText(err)}`));
  });
  document.addEventListener("paste", onPaste);
  $("download-csv").addEventListener("click", downloadCsv);
  $("clear").addEventListener("click", clearResults);
}

wireInput();
loadModel().catch((e) => {
  console.error(e);
  fail(errText(e));
});
