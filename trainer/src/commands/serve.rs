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
//!
//! It holds under load with a fixed set of threads (hyper on a small tokio runtime): a cap on
//! connections (`503` past it), one timeout for slow request heads, idle keep-alive connections
//! and downloads nobody reads, and bounded memory per request.

use crate::exit::Finished;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use petal_shared::bundle::{BundleMeta, META_FILE};
use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tokio_util::io::ReaderStream;

/// URL prefix of the bundle: where the page looks for `petal.json` by default.
pub const MODEL_PREFIX: &str = "/model/";

/// Threads that run connections. Serving files waits on sockets, not on the CPU; two keep one
/// slow gzip of a cold file from holding up everything else.
const RUNTIME_THREADS: usize = 2;

/// Threads that read files and compress them (tokio's blocking pool): the most at once.
const FILE_THREADS: usize = 8;

/// Connections past the cap that are still answered `503`; beyond these they are closed at once.
const REFUSALS: usize = 64;

/// How long a refused client has to send its request before it is closed unanswered.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read from a file per body chunk. hyper queues at most 16 chunks for a client that
/// reads slowly, so this bounds what one download holds in memory (~0.5 MiB).
const CHUNK: usize = 32 * 1024;

/// Largest request head (request line and headers) read; a longer one gets `431`.
const MAX_HEAD: usize = 64 * 1024;

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
    /// Connections served at once; more are answered `503 Service Unavailable`.
    #[arg(long, default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_connections: u32,
    /// Seconds a client may take to send its request, stay idle between requests, or leave a
    /// download unread before it is disconnected.
    #[arg(long, default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

pub fn run(args: Args) -> Result<Finished> {
    let site = Arc::new(Site::new(&args.page, &args.model)?);
    let addr = SocketAddr::new(args.host, args.port);
    let listener = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} (is another server using the port? try --port)")
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
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
    let limits = Limits {
        connections: args.max_connections as usize,
        timeout: Duration::from_secs(args.timeout),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .max_blocking_threads(FILE_THREADS)
        // Idle file threads go soon: after a burst the process is back to its resting size.
        .thread_keep_alive(Duration::from_secs(2))
        .thread_name("petal-serve")
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the server's runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::from_std(listener)?;
        accept(listener, site, limits).await
    })?;
    Ok(Finished::Complete)
}

/// What one server holds open at most, and how long it waits on a client.
#[derive(Clone, Copy, Debug)]
struct Limits {
    connections: usize,
    timeout: Duration,
}

/// Accepts for ever: each connection under the cap is served on its own task; past the cap it
/// is answered `503` (while [`REFUSALS`] allows) or closed.
async fn accept(listener: TcpListener, site: Arc<Site>, limits: Limits) -> std::io::Result<()> {
    let served = Arc::new(Semaphore::new(limits.connections));
    let refused = Arc::new(Semaphore::new(REFUSALS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait for connections to close, keep serving.
                log::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Ok(permit) = Arc::clone(&served).try_acquire_owned() {
            tokio::spawn(serve_connection(stream, Arc::clone(&site), limits, permit));
        } else if let Ok(permit) = Arc::clone(&refused).try_acquire_owned() {
            tokio::spawn(refuse_connection(stream, permit));
        }
    }
}

/// One client's connection, kept alive across requests until it is idle for `timeout`, sends
/// its request head too slowly, or leaves a response unread for `timeout`.
async fn serve_connection(
    stream: TcpStream,
    site: Arc<Site>,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |request| {
        let site = Arc::clone(&site);
        async move { Ok::<_, Infallible>(site.answer(request).await) }
    });
    let (http, io) = bounded(stream, limits.timeout);
    let served = http.serve_connection(io, service).await;
    if let Err(e) = served {
        // The browser went away mid-download, timed out, or sent something that is not HTTP.
        log::debug!("connection closed: {e}");
    }
}

/// A connection past the cap: its request is read (briefly) and answered `503` with
/// `Retry-After`, then the connection closes.
async fn refuse_connection(stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let service = service_fn(|request: Request<Incoming>| async move {
        let mut response = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections: try again in a moment\n",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        access_log(response.status(), request.method(), request.uri());
        Ok::<_, Infallible>(response)
    });
    let (mut http, io) = bounded(stream, REFUSAL_TIMEOUT);
    let _ = http.keep_alive(false).serve_connection(io, service).await;
}

/// The bounds every connection is served with: a request head must arrive within `timeout`
/// (hyper starts that clock whenever it awaits one, so a slow sender and an idle keep-alive
/// connection alike are closed after it) and fit in [`MAX_HEAD`]; a write that makes no
/// progress for `timeout` ends the connection.
fn bounded(
    stream: TcpStream,
    timeout: Duration,
) -> (http1::Builder, TokioIo<Pin<Box<TimeoutStream<TcpStream>>>>) {
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(timeout));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD);
    (http, TokioIo::new(Box::pin(stream)))
}

/// A response body: a file streamed in chunks, or bytes in memory.
type Body = BoxBody<Bytes, std::io::Error>;

/// An access log line per request: what a user watching the terminal wants to see, and what
/// the browser test counts to tell a download (200) from a revalidation (304). Not `println!`:
/// a closed stdout (`petal serve | head`) must not take the server down.
fn access_log(status: StatusCode, method: &Method, uri: &hyper::Uri) {
    let url = uri.to_string();
    let _ = writeln!(
        std::io::stdout().lock(),
        "{} {method} {}",
        status.as_u16(),
        url.escape_debug()
    );
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

    /// Answers one request. File work (resolving, reading, compressing a cold file) runs on the
    /// blocking pool, never on a connection thread.
    async fn answer(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let (parts, _body) = request.into_parts();
        let (method, uri) = (parts.method.clone(), parts.uri.clone());
        let response = tokio::task::spawn_blocking(move || {
            self.respond(&parts.method, &parts.uri, &parts.headers)
        })
        .await
        .unwrap_or_else(|e| {
            log::warn!("answering {uri}: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        });
        access_log(response.status(), &method, &uri);
        response
    }

    fn respond(&self, method: &Method, uri: &hyper::Uri, headers: &HeaderMap) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let not_found = || text(StatusCode::NOT_FOUND, "not found\n");
        let Some(path) = self.resolve(uri.path()) else {
            return not_found();
        };
        let (file, meta) = match File::open(&path).and_then(|f| {
            let m = f.metadata()?;
            Ok((f, m))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                log::warn!("cannot read {}: {e}", path.display());
                return not_found();
            }
        };
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let mut validators = Validators::new(meta.len(), modified);
        let compressible = path.starts_with(&self.page) && compressible(&path);
        let gzip = compressible && accepts_gzip(headers);
        if gzip {
            // A second representation of the file: its own strong validator (RFC 9110 §8.8.3).
            validators
                .etag
                .insert_str(validators.etag.len() - 1, "-gzip");
        }
        let mut response = Response::new(empty());
        let out = response.headers_mut();
        out.insert(header::ETAG, value(&validators.etag));
        out.insert(header::LAST_MODIFIED, value(&validators.last_modified));
        // Always revalidate: a rebuilt page or re-exported bundle shows up on reload.
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if compressible {
            // Caches must key the page's files on the encoding they asked for.
            out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        }
        if validators.not_modified(headers) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(&path)),
        );
        out.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        let (body, length) = if gzip {
            match self.gzip(&path, file, &validators.etag) {
                Ok(bytes) => {
                    out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    let length = bytes.len() as u64;
                    let body = Full::new(Bytes::from_owner(SharedBytes(bytes)))
                        .map_err(|never| match never {})
                        .boxed();
                    (body, length)
                }
                Err(e) => {
                    log::warn!("cannot read {}: {e}", path.display());
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
                }
            }
        } else {
            (file_body(file), meta.len())
        };
        // The page's progress bar counts the weights' bytes against it (hyper keeps it for HEAD
        // and sends no body there).
        out.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if method != Method::HEAD {
            *response.body_mut() = body;
        }
        response
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

/// Shared compressed bytes as a response body, without a copy (`Bytes::from_owner`).
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
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
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
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        let value = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(tags) = value(header::IF_NONE_MATCH) {
            return tags.split(',').map(str::trim).any(|tag| {
                tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag.as_str()
            });
        }
        if let Some(since) = value(header::IF_MODIFIED_SINCE)
            && let Ok(since) = httpdate::parse_http_date(since)
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

/// A header value we made: HTTP dates, hex ETags and MIME types are visible ASCII.
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("ASCII header value")
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A file's bytes, read [`CHUNK`] at a time as the client takes them.
fn file_body(file: File) -> Body {
    let chunks = ReaderStream::with_capacity(tokio::fs::File::from_std(file), CHUNK);
    StreamBody::new(chunks.map_ok(Frame::data)).boxed()
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
