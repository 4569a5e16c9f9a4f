// Petal's service worker: the page works offline after the first visit.
//
// It keeps the page's own files — index.html, the scripts, the style, the wasm module, the
// manifest and the icon — and answers from them when the network fails. Online, every file
// still comes from the network first (and refreshes the copy), so a new build is seen at once.
// The model bundle is not handled here: the page keeps it in its own Cache API copy
// (app.js, fetchCached), revalidated with ETags, and falls back to it offline.

const CACHE = "petal-page-v1";

// The page's files: the fixed ones, plus whatever index.html links or imports — trunk gives
// the wasm module, its JavaScript glue and the style sheet content-hashed names.
async function pageFiles() {
  const fixed = ["index.html", "app.js", "worker.js", "manifest.json", "icon.svg"];
  const html = await (await fetch("index.html", { cache: "no-cache" })).text();
  const linked = [...html.matchAll(/(?:href|src|from|module_or_path:)\s*=?\s*["']([^"']+)["']/g)]
    .map((m) => m[1])
    .filter((u) => !/^[a-z]+:/i.test(u) || u.startsWith(self.location.origin));
  return [...new Set([...fixed, ...linked])].map((u) => new URL(u, self.registration.scope).href);
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(await pageFiles());
      // The folder's own URL too, if the server answers it (not every static server does;
      // offline, a navigation to it falls back to index.html anyway).
      await cache.add("./").catch(() => {});
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith("petal-page-") && name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

// Which requests are the page's own files (not bundles, not photos).
function isPageFile(request) {
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return false;
  if (request.mode === "navigate") return true;
  if (url.pathname.endsWith("/petal.json")) return false;
  return /(\/|\.html|\.js|\.css|\.wasm|\.svg|manifest\.json)$/.test(url.pathname);
}

self.addEventListener("fetch", (event) => {
  if (!isPageFile(event.request)) return; // the browser's own handling
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(event.request);
        if (response.ok) event.waitUntil(cache.put(event.request, response.clone()));
        return response;
      } catch (offline) {
        const copy =
          (await cache.match(event.request, { ignoreSearch: true })) ||
          (event.request.mode === "navigate" ? await cache.match(new URL("index.html", self.registration.scope).href) : undefined);
        if (copy) return copy;
        throw offline;
      }
    })(),
  );
});
