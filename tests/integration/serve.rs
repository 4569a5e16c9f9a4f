//! `petal serve`: the page and a bundle over HTTP, with MIME types, validators and `304`s,
//! and nothing outside the two folders. Requests go over a raw TCP socket so that paths such
//! as `/../x` reach the server exactly as written (HTTP clients normalise them away).

use crate::util::{petal, petal_bin, tempdir};
use petal_shared::Arch;
use petal_shared::bundle::BundleMeta;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WASM: &[u8] = b"\0asm\x01\0\0\0 a tiny module";
const WEIGHTS: &[u8] = b"not real weights, but bytes the server must pass through unchanged";

/// A temp folder with a built-page stand-in (`page/`), a bundle (`bundle/`) and a secret
/// file beside them that no request may reach.
fn site() -> tempfile::TempDir {
    let dir = tempdir();
    let page = dir.path().join("page");
    std::fs::create_dir_all(page.join("sub")).unwrap();
    std::fs::write(
        page.join("index.html"),
        "<!doctype html><title>petal</title>",
    )
    .unwrap();
    std::fs::write(page.join("app.js"), "console.log('petal');").unwrap();
    std::fs::write(page.join("style.css"), "body{}").unwrap();
    std::fs::write(page.join("petal-web_bg.wasm"), WASM).unwrap();
    std::fs::write(page.join("sub/index.html"), "sub page").unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let meta = BundleMeta::new(Arch::ResNet18, vec!["daisy".into(), "rose".into()], 64, 73);
    std::fs::write(bundle.join("petal.json"), meta.to_json()).unwrap();
    std::fs::write(bundle.join("model.bpk"), WEIGHTS).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
    dir
}

/// A running `petal serve` on a free port; killed when dropped. Its stdout (the URL, then
/// one access-log line per request) is collected in `log`.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// `petal serve` with `extra` arguments (limits) after the usual ones.
    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(petal_bin())
            .current_dir(dir)
            .args([
                "serve", "--model", "bundle", "--page", "page", "--port", "0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start petal serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("petal serve printed nothing")
            .expect("stdout");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {first:?}"));
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Serve { child, addr, log }
    }

    /// A connection with `head` sent (possibly an unfinished request), nothing read yet.
    fn send(&self, head: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream
    }

    /// The server's thread count and resident memory (KiB), from `/proc`.
    #[cfg(target_os = "linux")]
    fn threads_and_rss(&self) -> (usize, usize) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> usize {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {status}"))
        };
        (field("Threads:"), field("VmRSS:"))
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", target, headers)
    }

    fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read reply");
        Reply::parse(&raw, method, target)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8], method: &str, target: &str) -> Reply {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {target}: no header end in {raw:?}"));
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Reply {
            status: status.parse().unwrap(),
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[test]
fn serve_answers_the_page_and_the_bundle_with_their_mime_types() {
    let dir = site();
    let server = Serve::start(dir.path());
    for (target, mime, body) in [
        (
            "/",
            "text/html",
            &b"<!doctype html><title>petal</title>"[..],
        ),
        (
            "/index.html",
            "text/html",
            b"<!doctype html><title>petal</title>",
        ),
        ("/app.js", "text/javascript", b"console.log('petal');"),
        ("/style.css", "text/css", b"body{}"),
        ("/petal-web_bg.wasm", "application/wasm", WASM),
        ("/sub/", "text/html", b"sub page"),
        ("/model/petal.json", "application/json", &[][..]),
        ("/model/model.bpk", "application/octet-stream", WEIGHTS),
        ("/app.js?v=2", "text/javascript", b"console.log('petal');"),
    ] {
        let reply = server.get(target, &[]);
        assert_eq!(reply.status, 200, "{target}: {reply:?}");
        let content_type = reply.header("Content-Type").unwrap_or_default();
        assert!(
            content_type.starts_with(mime),
            "{target}: Content-Type {content_type}"
        );
        if !body.is_empty() {
            assert_eq!(reply.body, body, "{target}");
        }
        assert_eq!(
            reply.header("Content-Length"),
            Some(reply.body.len().to_string().as_str()),
            "{target}: the page's progress bar needs Content-Length"
        );
        assert!(reply.header("ETag").is_some(), "{target}: no ETag");
        assert!(
            reply.header("Last-Modified").is_some(),
            "{target}: no Last-Modified"
        );
    }
    // The bundle's petal.json is served byte for byte.
    let json = server.get("/model/petal.json", &[]);
    assert_eq!(
        json.body,
        std::fs::read(dir.path().join("bundle/petal.json")).unwrap()
    );
    // HEAD: headers, no body.
    let head = server.request("HEAD", "/model/model.bpk", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(WEIGHTS.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    // Missing files and other methods.
    assert_eq!(server.get("/nope.js", &[]).status, 404);
    assert_eq!(server.get("/model/", &[]).status, 404);
    assert_eq!(server.request("POST", "/index.html", &[]).status, 405);

    // One access-log line per request on stdout, with the status.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = server.log.lock().unwrap().clone();
        if log.iter().any(|l| l == "405 POST /index.html") {
            assert!(
                log.iter().any(|l| l == "200 GET /model/model.bpk"),
                "{log:?}"
            );
            assert!(log.iter().any(|l| l == "404 GET /nope.js"), "{log:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "access log: {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_answers_304_to_unchanged_files_and_200_after_a_rewrite() {
    let dir = site();
    let server = Serve::start(dir.path());
    let first = server.get("/model/model.bpk", &[]);
    assert_eq!(first.status, 200);
    let etag = first.header("ETag").unwrap().to_string();
    let modified = first.header("Last-Modified").unwrap().to_string();

    for headers in [
        vec![("If-None-Match", etag.clone())],
        vec![("If-None-Match", format!("W/{etag}"))],
        vec![("If-None-Match", format!("\"other\", {etag}"))],
        vec![("If-Modified-Since", modified.clone())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = server.get("/model/model.bpk", &h);
        assert_eq!(reply.status, 304, "{h:?}");
        assert!(reply.body.is_empty(), "a 304 has no body");
        assert_eq!(reply.header("ETag"), Some(etag.as_str()));
    }
    // A different tag: the file again. If-None-Match wins over an If-Modified-Since that
    // alone would have matched.
    let other = server.get(
        "/model/model.bpk",
        &[
            ("If-None-Match", "\"stale\""),
            ("If-Modified-Since", &modified),
        ],
    );
    assert_eq!(other.status, 200);
    assert_eq!(other.body, WEIGHTS);

    // A re-exported bundle: new length and time, new ETag, full answer.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("bundle/model.bpk"), b"new weights").unwrap();
    let fresh = server.get("/model/model.bpk", &[("If-None-Match", &etag)]);
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.body, b"new weights");
    assert_ne!(fresh.header("ETag"), Some(etag.as_str()));
}

#[test]
fn serve_refuses_paths_outside_the_page_and_the_bundle() {
    let dir = site();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("page/link.txt"),
    )
    .unwrap();
    let server = Serve::start(dir.path());
    for target in [
        "/../secret.txt",
        "/./../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/..%5csecret.txt",
        "/sub/../../secret.txt",
        "/model/../secret.txt",
        "/model/../../secret.txt",
        "/model/%2e%2e/%2e%2e/secret.txt",
        "/model/..%2f..%2fsecret.txt",
        "/model/%2e%2e/page/index.html",
        "/%2fetc%2fpasswd",
        "//etc/passwd",
        "/index.html%00.js",
        "/%ff%fe",
        "/link.txt",
    ] {
        let reply = server.get(target, &[]);
        assert_eq!(reply.status, 404, "{target} answered {reply:?}");
        assert!(
            !String::from_utf8_lossy(&reply.body).contains("SECRET"),
            "{target} leaked the file"
        );
    }
    // The same server still answers ordinary requests.
    assert_eq!(server.get("/index.html", &[]).status, 200);
}

#[test]
fn serve_names_a_missing_bundle_or_page() {
    let dir = site();
    let err = petal(
        dir.path(),
        [
            "serve", "--model", "nowhere", "--page", "page", "--port", "0",
        ],
    )
    .failure();
    assert!(
        err.contains("nowhere") && err.contains("petal.json"),
        "{err}"
    );

    let err = petal(dir.path(), ["serve", "--model", "bundle", "--port", "0"]).failure();
    assert!(
        err.contains("dist") && err.contains("trunk build"),
        "the default page folder is dist/ and the error says how to build it: {err}"
    );

    // A port already taken: the error says which and what to do.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = petal(
        dir.path(),
        [
            "serve", "--model", "bundle", "--page", "page", "--port", &port,
        ],
    )
    .failure();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
    drop(taken);

    std::fs::remove_file(dir.path().join("bundle/model.bpk")).unwrap();
    let err = petal(
        dir.path(),
        [
            "serve", "--model", "bundle", "--page", "page", "--port", "0",
        ],
    )
    .failure();
    assert!(
        err.contains("model.bpk") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn serve_gzips_the_page_for_browsers_that_accept_it_and_never_the_weights() {
    let dir = site();
    // A wasm-sized module that compresses as real ones do: repetitive, not uniform.
    let module: Vec<u8> = (0..400_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("page/petal-web_bg.wasm"), &module).unwrap();
    let server = Serve::start(dir.path());
    let accept = [("Accept-Encoding", "gzip, deflate, br, zstd")];

    let plain = server.get("/petal-web_bg.wasm", &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("Content-Encoding"), None);
    assert_eq!(plain.body, module);
    assert_eq!(plain.header("Vary"), Some("Accept-Encoding"));

    let gzipped = server.get("/petal-web_bg.wasm", &accept);
    assert_eq!(gzipped.status, 200);
    assert_eq!(gzipped.header("Content-Encoding"), Some("gzip"));
    assert_eq!(gzipped.header("Content-Type"), Some("application/wasm"));
    assert_eq!(gzipped.header("Vary"), Some("Accept-Encoding"));
    assert_eq!(
        gzipped.header("Content-Length"),
        Some(gzipped.body.len().to_string().as_str())
    );
    assert!(
        gzipped.body.len() * 4 < module.len(),
        "{} gzipped bytes for {}",
        gzipped.body.len(),
        module.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&gzipped.body[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, module, "the gzipped body is the file");

    // Each representation has its own validator, and revalidates against it.
    let plain_tag = plain.header("ETag").unwrap();
    let gzip_tag = gzipped.header("ETag").unwrap();
    assert_ne!(plain_tag, gzip_tag);
    let again = server.get(
        "/petal-web_bg.wasm",
        &[accept[0], ("If-None-Match", gzip_tag)],
    );
    assert_eq!(again.status, 304, "{again:?}");
    assert_eq!(
        server
            .get(
                "/petal-web_bg.wasm",
                &[accept[0], ("If-None-Match", plain_tag)]
            )
            .status,
        200
    );
    // A second request is answered from the cache with the same bytes.
    assert_eq!(server.get("/petal-web_bg.wasm", &accept).body, gzipped.body);

    // Refused codings are honoured; weights are never compressed.
    let refused = server.get("/app.js", &[("Accept-Encoding", "gzip;q=0, br")]);
    assert_eq!(refused.header("Content-Encoding"), None);
    assert_eq!(refused.body, b"console.log('petal');");
    let weights = server.get("/model/model.bpk", &accept);
    assert_eq!(weights.header("Content-Encoding"), None);
    assert_eq!(weights.body, WEIGHTS);
}

/// Reads `stream` until the server closes it, up to `within`: `true` when it did (EOF or reset).
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64 * 1024];
    let deadline = std::time::Instant::now() + within;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) if std::time::Instant::now() < deadline => continue,
            Ok(_) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn serve_answers_503_past_its_connection_cap_and_drops_slow_and_idle_clients() {
    let dir = site();
    let server = Serve::start_with(dir.path(), &["--max-connections", "2", "--timeout", "1"]);
    let host = format!("Host: {}\r\n", server.addr);
    // A client that never finishes its request head (slowloris) ...
    let mut slow = server.send(&format!("GET /index.html HTTP/1.1\r\n{host}X-Slow: 1\r\n"));
    // ... and one that keeps its connection alive after an answer, then goes quiet.
    let mut idle = server.send(&format!("GET /app.js HTTP/1.1\r\n{host}\r\n"));
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the kept-alive client is served");

    // Both slots are taken: the next client is told so, with a time to come back.
    let busy = server.get("/index.html", &[]);
    assert_eq!(busy.status, 503, "{busy:?}");
    assert_eq!(busy.header("Retry-After"), Some("1"));
    assert!(String::from_utf8_lossy(&busy.body).contains("too many connections"));

    // After the timeout both are disconnected, and their slots serve others again.
    assert!(
        closed_by_server(&mut slow, Duration::from_secs(5)),
        "a client that never finished its request was kept"
    );
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(5)),
        "an idle kept-alive client was kept"
    );
    let again = server.get("/index.html", &[]);
    assert_eq!(again.status, 200, "{again:?}");
    let log = server.log.lock().unwrap().clone();
    assert!(
        log.iter().any(|l| l == "503 GET /index.html"),
        "the refusal is logged: {log:?}"
    );
}

/// Pseudo-random bytes (they do not compress: the kernel's socket buffers hold them as sent).
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

#[test]
fn serve_drops_a_client_that_stops_reading_a_download() {
    let dir = site();
    // Far more than loopback's socket buffers hold, so the server's writes stall.
    let big = noise(48 << 20, 7);
    std::fs::write(dir.path().join("page/big.bin"), &big).unwrap();
    let server = Serve::start_with(dir.path(), &["--max-connections", "1", "--timeout", "1"]);
    let mut stalled = server.send(&format!(
        "GET /big.bin HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    ));
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The stalled download holds the only slot ...
    assert_eq!(server.get("/index.html", &[]).status, 503);
    // ... until the write deadline passes; it never gets the whole file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let freed = loop {
        std::thread::sleep(Duration::from_millis(500));
        let status = server.get("/index.html", &[]).status;
        if status == 200 || std::time::Instant::now() > deadline {
            break status;
        }
    };
    assert_eq!(freed, 200, "the stalled client's slot was never freed");
    let mut rest = Vec::new();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        rest.len() < big.len(),
        "a client that stopped reading still got all {} bytes",
        big.len()
    );
}

#[cfg(target_os = "linux")]
#[test]
fn serve_holds_a_few_hundred_clients_with_every_download_intact_and_settles_after() {
    const DOWNLOADERS: usize = 200;
    const STALLED: usize = 100;
    const SOAK: Duration = Duration::from_secs(3);
    let dir = site();
    let weights = noise(3 << 20, 11);
    std::fs::write(dir.path().join("bundle/model.bpk"), &weights).unwrap();
    let module: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("page/petal-web_bg.wasm"), &module).unwrap();
    let server = Arc::new(Serve::start_with(dir.path(), &["--max-connections", "512"]));
    // The gzip cache filled, then the resting size.
    let accept = [("Accept-Encoding", "gzip")];
    assert_eq!(server.get("/petal-web_bg.wasm", &accept).status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let (rest_threads, rest_rss) = server.threads_and_rss();

    let expected: Arc<Vec<(&str, Vec<u8>)>> = Arc::new(vec![
        ("/model/model.bpk", weights.clone()),
        ("/petal-web_bg.wasm", module.clone()),
        (
            "/index.html",
            b"<!doctype html><title>petal</title>".to_vec(),
        ),
    ]);
    // One round: STALLED idle connections held open while DOWNLOADERS clients download for
    // SOAK, every body checked; then the server is left to settle.
    let round = || {
        let stalled: Vec<TcpStream> = (0..STALLED)
            .map(|_| server.send("GET /index.html HTTP/1.1\r\n"))
            .collect();
        let end = std::time::Instant::now() + SOAK;
        let peak = Arc::new(Mutex::new(0usize));
        let clients: Vec<_> = (0..DOWNLOADERS)
            .map(|i| {
                let (server, expected, peak) = (
                    Arc::clone(&server),
                    Arc::clone(&expected),
                    Arc::clone(&peak),
                );
                std::thread::spawn(move || {
                    let mut downloads = 0usize;
                    while std::time::Instant::now() < end {
                        let (target, want) = &expected[(i + downloads) % expected.len()];
                        let gzip = downloads.is_multiple_of(2);
                        let reply = server.get(target, if gzip { &accept } else { &[] });
                        assert_eq!(reply.status, 200, "{target}");
                        let body = if reply.header("Content-Encoding") == Some("gzip") {
                            let mut out = Vec::new();
                            flate2::read::GzDecoder::new(&reply.body[..])
                                .read_to_end(&mut out)
                                .unwrap();
                            out
                        } else {
                            reply.body
                        };
                        assert!(
                            body.len() == want.len()
                                && crc32fast::hash(&body) == crc32fast::hash(want),
                            "{target}: {} bytes arrived damaged",
                            body.len()
                        );
                        downloads += 1;
                        if downloads.is_multiple_of(16) {
                            let threads = server.threads_and_rss().0;
                            let mut peak = peak.lock().unwrap();
                            *peak = (*peak).max(threads);
                        }
                    }
                    downloads
                })
            })
            .collect();
        let downloads: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
        let loaded_rss = server.threads_and_rss().1;
        drop(stalled);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let settled = loop {
            let now = server.threads_and_rss();
            if now.0 <= rest_threads || std::time::Instant::now() > deadline {
                break now;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let peak = *peak.lock().unwrap();
        (downloads, peak, loaded_rss, settled)
    };
    let (first_downloads, first_peak, first_loaded, (first_threads, first_rss)) = round();
    let (downloads, peak, loaded, (after_threads, after_rss)) = round();
    eprintln!(
        "soak: {first_downloads} then {downloads} intact downloads by {DOWNLOADERS} clients \
         beside {STALLED} stalled ones, {SOAK:?} each; threads {rest_threads} at rest, \
         {first_peak}/{peak} at most, {first_threads}/{after_threads} after; resident {} MiB at \
         rest, {}/{} MiB under load, {}/{} MiB after",
        rest_rss / 1024,
        first_loaded / 1024,
        loaded / 1024,
        first_rss / 1024,
        after_rss / 1024,
    );
    assert!(downloads >= DOWNLOADERS, "{downloads} downloads");
    assert!(
        first_peak.max(peak) <= rest_threads + 8,
        "{} threads for {} connections: threads grow with clients",
        first_peak.max(peak),
        DOWNLOADERS + STALLED
    );
    assert!(
        first_threads <= rest_threads && after_threads <= rest_threads,
        "threads left after the soak: {first_threads}, then {after_threads} (rest {rest_threads})"
    );
    // The allocator keeps some of what a burst used; a second burst must not add to it.
    assert!(
        first_rss <= rest_rss + 64 * 1024 && after_rss <= first_rss + 24 * 1024,
        "resident memory grew: {rest_rss} KiB at rest, {first_rss} after one round, \
         {after_rss} after two"
    );
}
