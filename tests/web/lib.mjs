// Shared helpers of Petal's browser tests and benchmark: a static server for the page and
// bundles, Chromium with or without WebGPU, and page-driving helpers.
import { chromium } from "playwright-core";
import http from "node:http";
import { spawn } from "node:child_process";
import readline from "node:readline";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";

export const CHROMIUM = process.env.PETAL_CHROMIUM || "/usr/bin/chromium";

// Command-line `--name value` pairs.
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith("--")) throw new Error(`unexpected argument ${argv[i]}`);
    const key = argv[i].slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) out[key] = true;
    else out[key] = argv[++i];
  }
  return out;
}

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".css": "text/css",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".svg": "image/svg+xml",
};

// Serves `mounts` ({"/prefix/": folder}, longest prefix first; "/" for the page) on 127.0.0.1,
// with ETag/Last-Modified validators as any static server has. `hits` counts full (200)
// responses per URL path, so tests can tell a download from a revalidation.
export async function serve(mounts) {
  const prefixes = Object.keys(mounts).sort((a, b) => b.length - a.length);
  const hits = new Map();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const pathname = decodeURIComponent(url.pathname);
    const prefix = prefixes.find((p) => pathname.startsWith(p));
    let file = prefix && path.join(mounts[prefix], pathname.slice(prefix.length));
    if (file && file.endsWith(path.sep)) file = path.join(file, "index.html");
    if (!prefix || !file.startsWith(mounts[prefix])) {
      res.writeHead(403).end();
      return;
    }
    fs.stat(file, (err, st) => {
      // A folder's URL answers its index.html, as static servers do.
      if (!err && st.isDirectory()) {
        file = path.join(file, "index.html");
        st = fs.existsSync(file) ? fs.statSync(file) : null;
      }
      if (err || !st?.isFile()) {
        res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
        return;
      }
      const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
      const headers = {
        "Content-Type": TYPES[path.extname(file)] || "application/octet-stream",
        ETag: etag,
        "Last-Modified": st.mtime.toUTCString(),
        "Cache-Control": "no-cache",
      };
      if (req.headers["if-none-match"] === etag) {
        res.writeHead(304, headers).end();
        return;
      }
      hits.set(pathname, (hits.get(pathname) || 0) + 1);
      res.writeHead(200, { ...headers, "Content-Length": st.size });
      if (req.method === "HEAD") res.end();
      else fs.createReadStream(file).pipe(res);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { base, hits, close: () => new Promise((r) => server.close(r)) };
}

// Starts `PETAL serve --model MODEL --page PAGE` on a free port: the server users run. Same
// answer as `serve`: {base, hits, close}; `hits` counts full (200) responses per URL path,
// read from the access log petal prints on stdout ("200 GET /model/model.bpk").
export async function servePetal({ petal, page, model }) {
  const child = spawn(petal, ["serve", "--model", model, "--page", page, "--port", "0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const hits = new Map();
  const lines = readline.createInterface({ input: child.stdout });
  const base = await new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`petal serve exited (${code}) before serving`)));
    lines.once("line", (first) => {
      const url = first.match(/http:\/\/\S+/);
      url ? resolve(url[0].replace(/\/$/, "")) : reject(new Error(`no URL in "${first}"`));
    });
  });
  lines.on("line", (line) => {
    const m = line.match(/^200 GET (\S+)$/);
    if (!m) return;
    const pathname = decodeURIComponent(new URL(m[1], "http://x").pathname);
    hits.set(pathname, (hits.get(pathname) || 0) + 1);
  });
  const close = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill();
    });
  return { base, hits, close };
}

// Headless Chromium; `webgpu` turns on WebGPU (SwiftShader on a machine without a GPU). The
// camera is Chromium's fake one (a moving test pattern), allowed without a prompt. With
// `profile` (a folder) the browser keeps a real profile there instead of an incognito-like
// context: Chromium only offers to install an app outside incognito.
export async function launch({ webgpu, profile }) {
  const args = [
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
  ];
  if (webgpu) args.push("--enable-unsafe-webgpu");
  else args.push("--disable-features=WebGPU");
  if (profile) {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args,
      acceptDownloads: true,
    });
    return { browser: { close: () => context.close() }, context };
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args,
  });
  const context = await browser.newContext({ acceptDownloads: true });
  return { browser, context };
}

// Opens a page and records its console, so failures can show what the page said.
export async function openPage(context, url) {
  const page = await context.newPage();
  page.log = [];
  page.on("console", (m) => page.log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => page.log.push(`[pageerror] ${e.message}`));
  await page.goto(url);
  return page;
}

// Waits until the page's model is ready (or failed); returns {state, backend, status, ...}.
export async function waitSettled(page, timeoutMs = 600_000) {
  await page.waitForFunction(
    () => ["ready", "error"].includes(document.body.dataset.state),
    null,
    { timeout: timeoutMs, polling: 200 },
  );
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    backend: document.body.dataset.backend,
    modelSource: document.body.dataset.modelSource,
    status: document.getElementById("status").textContent,
    loadMs: window.petal.loadMs,
  }));
}

// Waits for `count` finished result cards and an idle page; returns them.
export async function results(page, count, timeoutMs = 600_000) {
  await page.waitForFunction(
    (n) =>
      document.querySelectorAll("#results .result:not(.pending)").length >= n &&
      document.body.dataset.state === "ready",
    count,
    { timeout: timeoutMs, polling: 200 },
  );
  return page.evaluate(() =>
    [...document.querySelectorAll("#results .result")].map((el) => ({
      file: el.dataset.file,
      label: el.dataset.label,
      prob: el.dataset.prob === undefined ? undefined : Number(el.dataset.prob),
      top: el.dataset.top ? JSON.parse(el.dataset.top) : undefined,
      error: el.dataset.error,
      preprocessMs: Number(el.dataset.preprocessMs),
      inferenceMs: Number(el.dataset.inferenceMs),
      dispatch: el.dataset.dispatch === undefined ? undefined : Number(el.dataset.dispatch),
    })),
  );
}

// Drops files on the page as a user's drag and drop does (a DataTransfer with File objects),
// fetching their bytes from the server under `urlPrefix`.
export async function dropFiles(page, urlPrefix, names) {
  await page.evaluate(
    async ([prefix, names]) => {
      const dt = new DataTransfer();
      for (const name of names) {
        const blob = await (await fetch(prefix + encodeURIComponent(name))).blob();
        dt.items.add(new File([blob], name, { type: blob.type }));
      }
      document
        .getElementById("dropzone")
        .dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    },
    [urlPrefix, names],
  );
}

export function tmpDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// Reads a little-endian float32 .npy file: {shape, data: Buffer of the raw values}.
export function readNpyF32(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString("latin1", major === 1 ? 10 : 12, start);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${file}: not little-endian float32: ${header}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order`);
  const shape = header
    .match(/'shape':\s*\(([^)]*)\)/)[1]
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  return { shape, data: buf.subarray(start) };
}

export function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}
