// Petal's inference worker: owns the wasm module and the model, so that downloading nothing,
// preprocessing, the network and the heat maps never hold up the page's main thread.
//
// Messages in: {id, op, ...}; each answered once with {id, ok: true, value} or
// {id, ok: false, error, fatal} (`fatal`: the wasm module trapped, this worker is done). Requests run one at a time in arrival order (the model runs one pass
// at a time); the page sends the next photos only when the previous answer came back, so a
// cancelled batch leaves nothing queued here.
//   init      {glue, wasm} → {wasmMs}: compiles the wasm module while the page downloads
//   load      {meta: Uint8Array, weights: ArrayBuffer, requested}
//             → {backend, reason, adapter, loadMs (weights → model, one warm-up pass), meta}
//   classifyBatch {files: [ArrayBuffer], k, heat: {maxSide, method}} → [outcome | {error}], one
//             per file (see web/src/page.rs): the photos go through the network in one pass (one
//             dispatch per kernel on WebGPU); each outcome has `heat`, PNG bytes of the top
//             class's map (`method`: "cam" or "grad-cam")
//   frame     {bitmap: ImageBitmap, k} → outcome (a camera frame)

let wasm = null;
let classifier = null;
let meta = null;
let chain = Promise.resolve();

onmessage = (event) => {
  const msg = event.data;
  chain = chain.then(() => handle(msg));
};

async function handle(msg) {
  try {
    const ops = { init, load, classifyBatch, frame };
    if (!ops[msg.op]) throw new Error(`unknown request ${msg.op}`);
    const { value, transfer = [] } = await ops[msg.op](msg);
    postMessage({ id: msg.id, ok: true, value }, transfer);
  } catch (e) {
    // A trap (a Rust panic, or wasm memory that ran out) leaves the module in no state to run
    // again: `fatal` tells the page to start a new worker.
    const fatal = e instanceof WebAssembly.RuntimeError;
    postMessage({ id: msg.id, ok: false, error: e && e.message ? e.message : String(e), fatal });
  }
}

// The adapter's facts as backend.rs reads them; null without WebGPU.
async function adapterFacts() {
  if (!self.navigator.gpu) return null;
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter();
  } catch {
    return null;
  }
  if (!adapter) return null;
  const info = adapter.info || {};
  return {
    vendor: info.vendor || "",
    architecture: info.architecture || "",
    device: info.device || "",
    description: info.description || "",
    isFallbackAdapter: Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter),
    shaderF16: adapter.features.has("shader-f16"),
  };
}

async function init({ glue, wasm: wasmUrl }) {
  const t0 = performance.now();
  const bindings = await import(glue);
  await bindings.default({ module_or_path: wasmUrl });
  wasm = bindings;
  return { value: { wasmMs: performance.now() - t0 } };
}

async function load({ meta: metaBytes, weights, requested }) {
  if (!wasm) throw new Error("the wasm module did not start");
  const adapter = await adapterFacts();
  const choice = JSON.parse(wasm.chooseBackend(requested || "", JSON.stringify(adapter)));
  const t1 = performance.now();
  // The weights move into wasm and are consumed there: the model is the only copy.
  classifier = await wasm.Classifier.load(metaBytes, new Uint8Array(weights), choice.backend === "webgpu");
  const loadMs = performance.now() - t1;
  meta = JSON.parse(classifier.meta);
  // burn may still fall back to the CPU if the adapter refuses a device: report what runs.
  const backend = classifier.backend;
  const reason =
    backend === choice.backend ? choice.reason : `WebGPU could not start here, so the CPU (${choice.reason})`;
  return { value: { backend, reason, adapter, loadMs, meta } };
}

function heatFor(out, { maxSide, method } = {}) {
  const maps = method === "grad-cam" ? out.grad_maps : out.maps;
  if (!maxSide || !maps.length) return null;
  return wasm.heatPng(JSON.stringify(maps[0]), out.width, out.height, meta.resize, meta.image_size, maxSide);
}

async function classifyBatch({ files, k, heat }) {
  if (!classifier) throw new Error("the model is not loaded");
  const outs = JSON.parse(await classifier.classifyBatch(files.map((b) => new Uint8Array(b)), k));
  const transfer = [];
  for (const out of outs) {
    if (out.error) continue;
    const t0 = performance.now();
    out.heat = heatFor(out, heat);
    out.heat_ms = performance.now() - t0;
    if (out.heat) transfer.push(out.heat.buffer);
  }
  return { value: outs, transfer };
}

// A camera frame: drawn on an OffscreenCanvas here, so the page only grabs the bitmap.
async function frame({ bitmap, k }) {
  if (!classifier) throw new Error("the model is not loaded");
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const out = JSON.parse(await classifier.classifyPixels(new Uint8Array(rgba.buffer), width, height, k));
  return { value: out };
}
