//! `petal serve`: the built web page and one bundle from one process, so that trying a model
//! in the browser needs no copying into `dist/` and no static server of one's own.
//!
//! The page (`web/app.js`) loads `model/petal.json` and the weights file it names from the
//! folder next to itself, so the bundle is mounted at `/model/` and everything else comes from
//! the page folder. Files carry `ETag` and `Last-Modified` and conditional requests get `304`,
//! which is what lets the page's Cache API copy of the weights be revalidated instead of
//! downloaded again. Nothing outside those two folders is ever served.
//!
//! The page's own files (the wasm module above all: ~19 MB, ~5 MB gzipped) are sent gzipped
//! to a browser that accepts it, compressed once per file version and kept in memory. The
//! bundle's weights are sent as they are: half-precision floats barely compress, and the
//! page's progress bar counts their bytes against `Content-Length`.

use anyhow::{Context, Result, anyhow, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use percent_encoding::percent_decode_str;
use petal_shared::bundle::{BundleMeta, META_FILE};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tiny_http::{Header, Method, Request, Response, ResponseBox, Server};

/// URL prefix of the bundle: where the page looks for `petal.json` by default.
pub const MODEL_PREFIX: &str = "/model/";

/// Requests served at once. The weights are one large download while the page's small files
/// arrive in parallel; a handful of workers keeps one from waiting on the other.
const WORKERS: usize = 8;

/// Serve the web page with a bundle: `http://127.0.0.1:8080/` classifies with BUNDLE.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundle folder (petal.json + weights), served as the page's `model/`.
    #[arg(short, long)]
    model: PathBuf,
    /// The built page (`trunk build --release` writes it to `dist/`).
    #[arg(long, default_value = "dist")]
    page: PathBuf,
    /// Port to listen on; 0 picks a free one (the printed URL names it).
    #[arg(short, long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on; 0.0.0.0 also serves other machines on the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Open the page in the default browser.
    #[arg(long)]
    open: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let site = Site::new(&args.page, &args.model)?;
    let server = Server::http(SocketAddr::new(args.host, args.port)).map_err(|e| {
        anyhow!(
            "cannot listen on {}:{}: {e} (is another server using the port? try --port)",
            args.host,
            args.port
        )
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("the server is not listening on an IP address")?;
    // A wildcard address is not something a browser can open; this machine answers on it too.
    let shown_host = if bound.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bound.ip()
    };
    let url = format!("http://{}/", SocketAddr::new(shown_host, bound.port()));
    println!("Petal page: {url}");
    println!(
        "  page {}, model {} ({} classes); Ctrl-C stops",
        args.page.display(),
        args.model.display(),
        site.classes
    );
    if args.open
        && let Err(e) = open_browser(&url)
    {
        log::warn!("cannot open a browser ({e}); open {url} yourself");
    }
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                for request in server.incoming_requests() {
                    site.handle(request);
                }
            });
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// The two folders a request may reach, canonicalised once so that every resolved file can be
/// checked to lie inside one of them (symbolic links included).
struct Site {
    page: PathBuf,
    model: PathBuf,
    classes: usize,
    /// Gzipped page files by path.
    gzipped: Mutex<HashMap<PathBuf, Gzipped>>,
}

/// A gzipped page file and the `ETag` of the version it was made from.
type Gzipped = (String, Arc<Vec<u8>>);

impl Site {
    fn new(page: &Path, model: &Path) -> Result<Self> {
        let meta_path = model.join(META_FILE);
        let bytes = std::fs::read(&meta_path).with_context(|| {
            format!(
                "no bundle at {}: cannot read {}",
                model.display(),
                meta_path.display()
            )
        })?;
        let meta = BundleMeta::from_json(&bytes)
            .with_context(|| format!("{} is not a valid bundle", meta_path.display()))?;
        let weights = model.join(&meta.weights);
        if !weights.is_file() {
            bail!(
                "bundle {}: its weights file {} is missing",
                model.display(),
                weights.display()
            );
        }
        if !page.join("index.html").is_file() {
            bail!(
                "no built page in {}: build it once with `trunk build --release` (it writes \
                 dist/), or pass --page DIR",
                page.display()
            );
        }
        if page.join("model").exists() {
            log::info!(
                "{}/model is hidden: /model/ serves the bundle {}",
                page.display(),
                model.display()
            );
        }
        let canonical = |p: &Path| {
            p.canonicalize()
                .with_context(|| format!("cannot resolve {}", p.display()))
        };
        Ok(Self {
            page: canonical(page)?,
            model: canonical(model)?,
            classes: meta.classes.len(),
            gzipped: Mutex::default(),
        })
    }

    /// The file a request path names, or `None` when it names nothing servable: not a file,
    /// not valid UTF-8 once decoded, or reaching outside the page and bundle folders
    /// (`..`, `%2e%2e`, encoded slashes or backslashes, absolute segments, links out).
    fn resolve(&self, target: &str) -> Option<PathBuf> {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let decoded = percent_decode_str(path).decode_utf8().ok()?;
        let (root, rest) = match decoded.strip_prefix(MODEL_PREFIX) {
            Some(rest) => (&self.model, rest),
            None => (&self.page, decoded.strip_prefix('/')?),
        };
        let mut file = root.clone();
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            // Exactly one ordinary component: rejects `.`, `..`, a backslash or drive prefix
            // on Windows and a NUL anywhere.
            let mut components = Path::new(segment).components();
            match (components.next(), components.next()) {
                (Some(Component::Normal(_)), None) if !segment.contains(['\\', '\0']) => {
                    file.push(segment)
                }
                _ => return None,
            }
        }
        if rest.is_empty() || rest.ends_with('/') {
            file.push("index.html");
        }
        let file = file.canonicalize().ok()?;
        (file.starts_with(root) && file.is_file()).then_some(file)
    }

    fn handle(&self, request: Request) {
        let (status, response) = self.respond(&request);
        let url = request.url().escape_debug().to_string();
        // An access log line per request: what a user watching the terminal wants to see, and
        // what the browser test counts to tell a download (200) from a revalidation (304).
        // Not `println!`: a closed stdout (`petal serve | head`) must not kill a worker.
        let _ = writeln!(
            std::io::stdout().lock(),
            "{status} {} {url}",
            request.method()
        );
        if let Err(e) = request.respond(response) {
            // The browser went away mid-download (tiny_http already ignores resets).
            log::debug!("answering {url}: {e}");
        }
    }

    fn respond(&self, request: &Request) -> (u16, ResponseBox) {
        if !matches!(request.method(), Method::Get | Method::Head) {
            let response = text(405, "only GET and HEAD are served\n")
                .with_header(header("Allow", "GET, HEAD"));
            return (405, response);
        }
        let Some(path) = self.resolve(request.url()) else {
            return (404, text(404, "not found\n"));
        };
        let (file, meta) = match File::open(&path).and_then(|f| {
            let m = f.metadata()?;
            Ok((f, m))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                log::warn!("cannot read {}: {e}", path.display());
                return (404, text(404, "not found\n"));
            }
        };
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let mut validators = Validators::new(meta.len(), modified);
        let compressible = path.starts_with(&self.page) && compressible(&path);
        let gzip = compressible && accepts_gzip(request);
        if gzip {
            // A second representation of the file: its own strong validator (RFC 9110 §8.8.3).
            validators
                .etag
                .insert_str(validators.etag.len() - 1, "-gzip");
        }
        let mut common = vec![
            header("ETag", &validators.etag),
            header("Last-Modified", &validators.last_modified),
            // Always revalidate: a rebuilt page or re-exported bundle shows up on reload.
            header("Cache-Control", "no-cache"),
        ];
        if compressible {
            // Caches must key the page's files on the encoding they asked for.
            common.push(header("Vary", "Accept-Encoding"));
        }
        if validators.not_modified(request) {
            let mut response = Response::empty(304).boxed();
            for h in common {
                response.add_header(h);
            }
            return (304, response);
        }
        let mut headers = vec![
            header("Content-Type", content_type(&path)),
            header("X-Content-Type-Options", "nosniff"),
        ];
        let (body, length): (Box<dyn Read + Send>, u64) = if gzip {
            match self.gzip(&path, file, &validators.etag) {
                Ok(bytes) => {
                    headers.push(header("Content-Encoding", "gzip"));
                    let len = bytes.len() as u64;
                    (Box::new(std::io::Cursor::new(SharedBytes(bytes))), len)
                }
                Err(e) => {
                    log::warn!("cannot read {}: {e}", path.display());
                    return (500, text(500, "cannot read the file\n"));
                }
            }
        } else {
            (Box::new(file), meta.len())
        };
        let Ok(length) = usize::try_from(length) else {
            return (500, text(500, "file too large\n"));
        };
        let mut response = Response::new(200.into(), headers, body, Some(length), None)
            .boxed()
            // tiny_http switches to chunked encoding above 32 KiB by default, which drops the
            // Content-Length the page's progress bar needs; the length is known, so send it.
            .with_chunked_threshold(usize::MAX);
        for h in common {
            response.add_header(h);
        }
        (200, response)
    }

    /// The gzipped bytes of `path` at the version `etag` names, compressed on first use. Two
    /// workers asking at once may both compress; the result is the same.
    fn gzip(&self, path: &Path, mut file: File, etag: &str) -> std::io::Result<Arc<Vec<u8>>> {
        let cached = self
            .gzipped
            .lock()
            .map_err(|_| poisoned())?
            .get(path)
            .cloned();
        if let Some((tag, bytes)) = cached
            && tag == etag
        {
            return Ok(bytes);
        }
        let mut raw = Vec::new();
        file.read_to_end(&mut raw)?;
        // Level 6 (gzip's default): level 9 saves ~1% of the wasm module for twice the time.
        let mut encoder = GzEncoder::new(Vec::with_capacity(raw.len() / 3), Compression::default());
        encoder.write_all(&raw)?;
        let bytes = Arc::new(encoder.finish()?);
        self.gzipped
            .lock()
            .map_err(|_| poisoned())?
            .insert(path.to_path_buf(), (etag.to_owned(), Arc::clone(&bytes)));
        Ok(bytes)
    }
}

fn poisoned() -> std::io::Error {
    std::io::Error::other("a worker panicked while holding the gzip cache")
}

/// Shared compressed bytes as a response body (`Cursor` needs `AsRef<[u8]>`).
struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Files that shrink under gzip: text and wasm. Images are compressed already.
fn compressible(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    [
        "html", "htm", "js", "mjs", "css", "wasm", "json", "map", "txt", "svg",
    ]
    .iter()
    .any(|c| ext.eq_ignore_ascii_case(c))
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): `gzip` or `*` with a non-zero
/// quality.
fn accepts_gzip(request: &Request) -> bool {
    request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Accept-Encoding"))
        .flat_map(|h| h.value.as_str().split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let quality = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(Some(1.0), |q| q.parse::<f32>().ok());
            (name.eq_ignore_ascii_case("gzip") || name == "*") && quality.is_some_and(|q| q > 0.0)
        })
}

/// `ETag` and `Last-Modified` of a file, from its size and modification time: any rewrite
/// (`petal export` again, a new `trunk build`) changes them.
struct Validators {
    etag: String,
    last_modified: String,
    modified_secs: u64,
}

impl Validators {
    fn new(len: u64, modified: SystemTime) -> Self {
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            etag: format!("\"{len:x}-{:x}\"", since_epoch.as_nanos()),
            last_modified: httpdate::fmt_http_date(modified),
            modified_secs: since_epoch.as_secs(),
        }
    }

    /// RFC 9110 §13.2.2: `If-None-Match` decides when present (weak comparison, `*` matches);
    /// otherwise `If-Modified-Since`, at the one-second resolution of HTTP dates.
    fn not_modified(&self, request: &Request) -> bool {
        let value = |name: &'static str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.equiv(name))
                .map(|h| h.value.as_str().to_owned())
        };
        if let Some(tags) = value("If-None-Match") {
            return tags.split(',').map(str::trim).any(|tag| {
                tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag.as_str()
            });
        }
        if let Some(since) = value("If-Modified-Since")
            && let Ok(since) = httpdate::parse_http_date(&since)
        {
            let since = since
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            return self.modified_secs <= since;
        }
        false
    }
}

/// MIME type by extension: browsers refuse to compile `.wasm` served as anything but
/// `application/wasm` with the streaming API, and module scripts need a JavaScript type.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" | "map" => "application/json",
        "txt" | "csv" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        // Burnpack weights (`.bpk`) and anything else: bytes, never sniffed into HTML.
        _ => "application/octet-stream",
    }
}

fn header(name: &str, value: &str) -> Header {
    // Names are ours and values are ASCII (HTTP dates, hex ETags, MIME types).
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn text(status: u16, body: &str) -> ResponseBox {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
        .boxed()
}

/// Opens `url` with the platform's default browser.
fn open_browser(url: &str) -> std::io::Result<()> {
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::io::stdout().flush()
}
