// The page's download feedback, without the wasm build (seconds, not the 25-minute trunk build):
//   node progress.mjs
// Serves the real index.html, web/app.js and web/style.css with a stand-in for the wasm
// bindings, and a weights file streamed in pieces with no Content-Length (chunked), then with
// one. Checks that the bar is indeterminate and counts bytes received when the length is
// unknown, fills when it is known, and is gone once the model is ready.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launch, openPage, waitSettled } from "./lib.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const WEIGHTS = 3_000_000;

// The wasm module's part, as far as loading goes: petal.json passes through, and the worker
// (a stand-in too, below) loads the model. The preload links are those trunk writes.
const STUB = `<link rel="modulepreload" href="stub.js"><link rel="preload" href="stub.wasm" as="fetch" type="application/wasm">
<script>
window.wasmBindings = {
  parseMeta: (bytes) => new TextDecoder().decode(bytes),
};
// Every state of the bar while the weights stream in.
window.progressSeen = [];
addEventListener("DOMContentLoaded", () => {
  const text = document.getElementById("progress-text");
  new MutationObserver(() => {
    const bar = document.getElementById("progress");
    progressSeen.push({
      text: text.textContent,
      indeterminate: !bar.hasAttribute("value"),
      visible: getComputedStyle(document.getElementById("progress-wrap")).display !== "none",
    });
  }).observe(text, { childList: true, characterData: true, subtree: true });
});
</script>
<link rel="stylesheet" href="style.css">
</head>`;

const html = fs
  .readFileSync(path.join(root, "index.html"), "utf8")
  .replace(/<link data-trunk[^>]*>\n?/g, "")
  .replace("</head>", STUB);
const meta = JSON.stringify({
  format_version: 1,
  arch: "resnet18",
  classes: ["daisy", "rose"],
  image_size: 64,
  resize: 73,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  precision: "f32",
  weights: "model.bpk",
});
const files = {
  "/index.html": ["text/html", html],
  "/app.js": ["text/javascript", fs.readFileSync(path.join(root, "web/app.js"))],
  "/style.css": ["text/css", fs.readFileSync(path.join(root, "web/style.css"))],
  "/model/petal.json": ["application/json", meta],
  // The inference worker's answer to "load": the model is ready on the CPU.
  "/worker.js": [
    "text/javascript",
    `onmessage = ({ data }) => postMessage({ id: data.id, ok: true, value: ${JSON.stringify({
      backend: "cpu",
      reason: "stand-in",
      adapter: null,
      loadMs: 0,
    })} });`,
  ],
};

let withLength = false;
const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x").pathname;
  if (url === "/model/model.bpk") {
    const headers = { "Content-Type": "application/octet-stream", "Cache-Control": "no-store" };
    if (withLength) headers["Content-Length"] = WEIGHTS;
    res.writeHead(200, headers); // no length: Node sends it chunked
    const piece = Buffer.alloc(WEIGHTS / 10, 7);
    for (let i = 0; i < 10; i++) {
      res.write(piece);
      await new Promise((r) => setTimeout(r, 20));
    }
    res.end();
    return;
  }
  const file = files[url === "/" ? "/index.html" : url];
  if (!file) return res.writeHead(404).end();
  res.writeHead(200, { "Content-Type": file[0], "Cache-Control": "no-store" }).end(file[1]);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;

let failures = 0;
const check = (cond, msg) => {
  console.log(`  ${cond ? "ok  " : "FAIL"} ${msg}`);
  if (!cond) failures++;
};

const { browser, context } = await launch({ webgpu: false });
for (const known of [false, true]) {
  withLength = known;
  console.log(known ? "\nwith Content-Length" : "\nwithout Content-Length (chunked)");
  // A fresh context each time: the Cache API must not answer instead of the server.
  const ctx = known ? await browser.newContext() : context;
  const page = await openPage(ctx, `${base}/index.html`);
  const s = await waitSettled(page, 60_000);
  const seen = await page.evaluate(() => window.progressSeen);
  const bar = await page.evaluate(
    () => getComputedStyle(document.getElementById("progress-wrap")).display,
  );
  check(s.state === "ready", `the page is ready (${s.status})`);
  check(seen.length > 1, `the bar moved ${seen.length} times during the download`);
  check(seen.every((p) => p.visible), "the bar is shown while downloading");
  const last = seen[seen.length - 1] || {};
  if (known) {
    check(seen.every((p) => !p.indeterminate), "a known length fills the bar");
    check(last.text === "3.0 MB / 3.0 MB", `it says "${last.text}"`);
  } else {
    check(seen.every((p) => p.indeterminate), "no length: the bar is indeterminate");
    check(
      seen.every((p) => / received$/.test(p.text)) && last.text === "3.0 MB received",
      `it counts bytes received ("${seen[0]?.text}" … "${last.text}")`,
    );
  }
  check(bar === "none", `the bar is gone once the model is ready (display ${bar})`);
  await page.close();
}
await browser.close();
server.close();
if (failures) {
  console.log(`\n${failures} download-feedback check(s) failed`);
  process.exit(1);
}
console.log("\ndownload feedback checks passed");
