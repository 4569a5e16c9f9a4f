//! `petal download` against a small HTTP/1.1 server on 127.0.0.1 that serves generated files:
//! hash checks, resume after a dropped connection, and safe unpacking. Nothing here leaves
//! the loopback interface.

use crate::util::{Run, petal_bin, tempdir};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Where `petal download flowers` looks, below the base URL.
const FLOWERS_PATH: &str = "/download.tensorflow.org/example_images/flower_photos.tgz";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    /// Send only this many body bytes of the first response, then close the connection.
    cut_first_after: Option<usize>,
    /// Answer every request with the whole file (200), as servers without range support do.
    ignore_range: bool,
}

/// A one-thread HTTP/1.1 server: `Connection: close`, GET only, `Range: bytes=N-` honoured.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(files: &[(&str, &[u8])], behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let files: HashMap<String, Vec<u8>> = files
            .iter()
            .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        // Lives until the test binary exits; each test has its own port.
        std::thread::spawn(move || {
            let mut cut = behaviour.cut_first_after;
            for stream in listener.incoming().flatten() {
                // A client that hangs up early is not the server's failure.
                let _ = serve(stream, &files, behaviour, &mut cut, &log);
            }
        });
        Server { base, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    mut stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    behaviour: Behaviour,
    cut: &mut Option<usize>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let Some(body) = files.get(&path) else {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let start = range
        .as_deref()
        .filter(|_| !behaviour.ignore_range)
        .and_then(|r| {
            r.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        });
    let len = body.len();
    let (status, content_range, slice) = match start {
        Some(s) if s >= len => (
            "416 Range Not Satisfiable",
            format!("Content-Range: bytes */{len}\r\n"),
            &body[..0],
        ),
        Some(s) => (
            "206 Partial Content",
            format!("Content-Range: bytes {s}-{}/{len}\r\n", len - 1),
            &body[s..],
        ),
        None => ("200 OK", String::new(), &body[..]),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{content_range}Connection: close\r\n\r\n",
        slice.len()
    )?;
    match cut.take() {
        // The connection drops mid-body: the client saw a Content-Length it will not get.
        Some(n) => stream.write_all(&slice[..n.min(slice.len())])?,
        None => stream.write_all(slice)?,
    }
    stream.flush()
}

/// `len` bytes that differ per `seed` (no two tests share a file by accident).
fn generated(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A gzipped tar with the given (path, contents) entries; names are written raw so that the
/// test can build archives the `tar` crate itself would refuse to write (`..`, absolute).
fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        let raw = &mut header.as_gnu_mut().expect("gnu header").name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Runs `petal download ARGS` in `dir` with no proxy settings (loopback must stay loopback)
/// and `PETAL_DOWNLOAD_BASE_URL` set to `base`, or unset.
fn download(dir: &Path, args: &[&str], base: Option<&str>) -> Run {
    let mut cmd = Command::new(petal_bin());
    cmd.current_dir(dir).arg("download").args(args);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    match base {
        Some(base) => cmd.env("PETAL_DOWNLOAD_BASE_URL", base),
        None => cmd.env_remove("PETAL_DOWNLOAD_BASE_URL"),
    };
    Run {
        output: cmd.output().expect("cannot start petal"),
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn file_with_the_right_hash_prefix_is_downloaded_once() {
    let bytes = generated(200_000, 1);
    let sha = sha256_hex(&bytes);
    let name = format!("resnet18-{}.pth", &sha[..8]);
    let path = format!("/models/{name}");
    let server = Server::start(&[(&path, &bytes)], Behaviour::default());
    let dir = tempdir();
    let url = server.url(&path);
    let args = ["url", url.as_str(), "--check-hash", "-o", "weights"];

    let out = download(dir.path(), &args, None).success();
    assert!(out.contains(&sha), "{out}");
    assert_eq!(
        std::fs::read(dir.path().join("weights").join(&name)).unwrap(),
        bytes
    );
    assert_eq!(names_in(&dir.path().join("weights")), [name.as_str()]);

    // A verified file is not fetched again.
    let out = download(dir.path(), &args, None).success();
    assert!(out.contains("already there, verified"), "{out}");
    assert_eq!(server.seen().len(), 1);
}

/// The built-in table's names and hash prefixes, fetched from a server that sends the wrong
/// bytes: rejected, nothing left behind, the error names file, expected and actual hash.
#[test]
fn weights_with_the_wrong_hash_are_rejected() {
    let bytes = generated(50_000, 2);
    let actual = sha256_hex(&bytes);
    for (arch, version, name, prefix) in [
        ("resnet18", "v1", "resnet18-f37072fd.pth", "f37072fd"),
        ("resnet101", "v2", "resnet101-cd907fc2.pth", "cd907fc2"),
        (
            "convnext_tiny",
            "v1",
            "convnext_tiny-983f1562.pth",
            "983f1562",
        ),
    ] {
        let path = format!("/models/{name}");
        let server = Server::start(&[(&path, &bytes)], Behaviour::default());
        let dir = tempdir();
        let args = [
            "weights",
            "--arch",
            arch,
            "--weights",
            version,
            "--base-url",
            &server.base,
            "-o",
            "weights",
        ];
        let err = download(dir.path(), &args, None).failure();
        assert!(
            err.contains(name) && err.contains(prefix) && err.contains(&actual),
            "{err}"
        );
        assert_eq!(server.seen()[0].path, path);
        assert!(names_in(&dir.path().join("weights")).is_empty());
    }
}

#[test]
fn full_sha256_mismatch_is_rejected() {
    let bytes = generated(10_000, 3);
    let server = Server::start(&[("/f.bin", &bytes)], Behaviour::default());
    let dir = tempdir();
    let wrong = "0".repeat(64);
    let url = server.url("/f.bin");
    let err = download(dir.path(), &["url", &url, "--sha256", &wrong], None).failure();
    assert!(
        err.contains("f.bin") && err.contains(&wrong) && err.contains(&sha256_hex(&bytes)),
        "{err}"
    );
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn resnet18_has_no_v2_weights() {
    let dir = tempdir();
    let err = download(
        dir.path(),
        &["weights", "--arch", "resnet18", "--weights", "v2"],
        None,
    )
    .failure();
    assert!(
        err.contains("no IMAGENET1K_V2 weights for resnet18"),
        "{err}"
    );
}

/// The first response drops the connection halfway; the second run asks for the rest with
/// `Range` and ends with the exact file.
#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let bytes = generated(300_000, 4);
    let sha = sha256_hex(&bytes);
    let cut = 120_000;
    let server = Server::start(
        &[("/data.bin", &bytes)],
        Behaviour {
            cut_first_after: Some(cut),
            ..Behaviour::default()
        },
    );
    let dir = tempdir();
    let url = server.url("/data.bin");
    let args = ["url", url.as_str(), "--sha256", &sha];

    let err = download(dir.path(), &args, None).failure();
    assert!(
        err.contains("interrupted") && err.contains("resume"),
        "{err}"
    );
    let part = dir.path().join("data.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);
    assert!(!dir.path().join("data.bin").exists());

    download(dir.path(), &args, None).success();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=120000-"));
    assert_eq!(std::fs::read(dir.path().join("data.bin")).unwrap(), bytes);
    assert!(!part.exists());
}

/// A server that ignores `Range` sends the whole file again: the `.part` restarts from zero
/// instead of growing a duplicated prefix.
#[test]
fn server_without_range_support_restarts_from_zero() {
    let bytes = generated(100_000, 5);
    let sha = sha256_hex(&bytes);
    let server = Server::start(
        &[("/data.bin", &bytes)],
        Behaviour {
            cut_first_after: Some(40_000),
            ignore_range: true,
        },
    );
    let dir = tempdir();
    let url = server.url("/data.bin");
    let args = ["url", url.as_str(), "--sha256", &sha];
    download(dir.path(), &args, None).failure();
    download(dir.path(), &args, None).success();
    assert_eq!(server.seen()[1].range.as_deref(), Some("bytes=40000-"));
    assert_eq!(std::fs::read(dir.path().join("data.bin")).unwrap(), bytes);
}

#[test]
fn flowers_archive_is_unpacked_into_class_folders() {
    let daisy = generated(3_000, 6);
    let archive = tgz(&[
        ("flower_photos/LICENSE.txt", b"CC-BY"),
        ("flower_photos/daisy/1.jpg", &daisy),
        ("flower_photos/daisy/2.jpg", b"two"),
        ("flower_photos/roses/3.jpg", b"three"),
    ]);
    let server = Server::start(&[(FLOWERS_PATH, &archive)], Behaviour::default());
    let dir = tempdir();
    // The base URL from the environment this time.
    let out = download(dir.path(), &["flowers", "-o", "data"], Some(&server.base)).success();
    assert!(out.contains("2 classes, 3 files"), "{out}");
    assert!(out.contains(&sha256_hex(&archive)), "{out}");
    let data = dir.path().join("data");
    assert_eq!(
        std::fs::read(data.join("flower_photos/daisy/1.jpg")).unwrap(),
        daisy
    );
    assert_eq!(
        names_in(&data.join("flower_photos")),
        ["LICENSE.txt", "daisy", "roses"]
    );
    // No temporary folder or `.part` left beside it.
    assert_eq!(names_in(&data), ["flower_photos", "flower_photos.tgz"]);

    let out = download(dir.path(), &["flowers", "-o", "data"], Some(&server.base)).success();
    assert!(out.contains("already there"), "{out}");
    assert_eq!(server.seen().len(), 1);
}

/// Entries that would land outside the target are refused: nothing is written outside, no
/// half-unpacked folder appears, and the untrusted archive is deleted.
#[test]
fn archive_entries_outside_the_target_are_rejected() {
    for (evil, why) in [
        ("flower_photos/../../evil.txt", "'..'"),
        ("/tmp/petal-download-test-evil.txt", "absolute"),
    ] {
        let archive = tgz(&[("flower_photos/daisy/1.jpg", b"one"), (evil, b"gotcha")]);
        let server = Server::start(&[(FLOWERS_PATH, &archive)], Behaviour::default());
        let dir = tempdir();
        let args = ["flowers", "-o", "data", "--base-url", &server.base];
        let err = download(dir.path(), &args, None).failure();
        assert!(err.contains(evil) && err.contains(why), "{err}");
        assert!(!dir.path().join("evil.txt").exists());
        assert!(names_in(&dir.path().join("data")).is_empty());
    }
    assert!(!Path::new("/tmp/petal-download-test-evil.txt").exists());
}
