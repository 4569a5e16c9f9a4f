//! Resumable, verified, atomic downloads over HTTP(S).
//!
//! A download goes into `NAME.part` beside the destination. If a `.part` is already there (an
//! earlier run was interrupted), we ask the server for the rest with `Range: bytes=N-` and
//! append when it answers `206 Partial Content`; a server that ignores ranges answers `200`
//! and we start again from zero. The SHA-256 is computed over the whole file, and only a file
//! that passes every check is renamed into place, so `NAME` either does not exist or is
//! complete and verified.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a download must hash to.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Leading hex digits of the SHA-256 (torch.hub's `check_hash`: torchvision file names
    /// carry the first 8), with where they come from for the error message.
    pub prefix: Option<(String, String)>,
    /// The full SHA-256 in lowercase hex (`--sha256`).
    pub full: Option<String>,
}

impl Expected {
    /// Checks a lowercase hex digest; the error names the file and both hashes.
    pub fn check(&self, file: &Path, actual: &str) -> Result<()> {
        if let Some((prefix, origin)) = &self.prefix
            && !actual.starts_with(prefix.as_str())
        {
            bail!(
                "{}: SHA-256 mismatch: expected a hash starting with {prefix} ({origin}), got {actual}",
                file.display()
            );
        }
        if let Some(full) = &self.full
            && actual != full
        {
            bail!(
                "{}: SHA-256 mismatch: expected {full} (--sha256), got {actual}",
                file.display()
            );
        }
        Ok(())
    }

    /// Whether any hash is known at all.
    pub fn is_known(&self) -> bool {
        self.prefix.is_some() || self.full.is_some()
    }
}

/// Parses `--sha256`: 64 hex digits, any case.
pub fn parse_sha256(text: &str) -> Result<String, String> {
    let hex = text.trim().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err("expected 64 hex digits".into())
    }
}

/// The hash prefix torch.hub reads from a file name: the first `-<hex digits>.` in it
/// (`HASH_REGEX = re.compile(r'-([a-f0-9]*)\.')` in `torch/hub.py`). `None` when there is
/// none or it is empty (torch.hub would then check nothing).
pub fn name_hash_prefix(name: &str) -> Option<&str> {
    for (dash, _) in name.match_indices('-') {
        let rest = &name[dash + 1..];
        let digits = rest
            .bytes()
            .take_while(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .count();
        if rest.as_bytes().get(digits) == Some(&b'.') {
            return (digits > 0).then(|| &rest[..digits]);
        }
    }
    None
}

/// How a download ended.
#[derive(Debug)]
pub struct Fetched {
    /// Lowercase hex SHA-256 of the file in place.
    pub sha256: String,
    pub bytes: u64,
    /// The file was already there and verified; nothing was transferred.
    pub cached: bool,
}

/// `dest` with `.part` appended to its file name.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Downloads `url` into `dest` (see the module docs).
pub fn fetch(url: &str, dest: &Path, expected: &Expected) -> Result<Fetched> {
    if dest.is_file() {
        let (sha256, bytes) = hash_file(dest)?;
        match expected.check(dest, &sha256) {
            Ok(()) => {
                log::info!("{} is already there and verified", dest.display());
                // A `.part` beside a verified file is a leftover; it must not linger.
                remove_if_exists(&part_path(dest))?;
                return Ok(Fetched {
                    sha256,
                    bytes,
                    cached: true,
                });
            }
            // A stale or damaged file from elsewhere: replace it (the rename below does, and
            // only once the new file is verified).
            Err(err) => log::warn!("{err:#}; downloading it again"),
        }
    }
    let part = part_path(dest);
    let agent = agent();
    let mut response = request(&agent, url, &part)?;
    if response.status() == 416 {
        // Range Not Satisfiable: our `.part` is not a prefix of what the server has now (or is
        // the whole file from a run that stopped before renaming). Start afresh, once.
        log::warn!(
            "server refused to resume {}; starting again",
            part.display()
        );
        remove_if_exists(&part)?;
        response = request(&agent, url, &part)?;
    }
    let status = response.status();
    let resume_from = match status.as_u16() {
        200 => 0,
        206 => {
            let offset = file_len(&part)?;
            let range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match content_range_start(range) {
                Some(start) if start == offset => offset,
                _ => bail!(
                    "{url}: server answered a range request with Content-Range {range:?}, \
                     not bytes {offset}-; delete {} to start again",
                    part.display()
                ),
            }
        }
        _ => bail!("{url}: server answered {status}"),
    };
    let remaining = response.body().content_length();

    let mut hasher = Sha256::new();
    let mut file = if resume_from > 0 {
        log::info!("resuming {} at byte {resume_from}", part.display());
        // The hash covers the whole file, so the bytes we already have go in first.
        let mut old =
            File::open(&part).with_context(|| format!("cannot read {}", part.display()))?;
        io::copy(&mut old, &mut hasher)
            .with_context(|| format!("cannot read {}", part.display()))?;
        OpenOptions::new().append(true).open(&part)
    } else {
        File::create(&part)
    }
    .with_context(|| format!("cannot write {}", part.display()))?;

    let bar = progress_bar(remaining.map(|n| n + resume_from), dest);
    bar.set_position(resume_from);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = resume_from;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                // Keep what arrived: the next run resumes from here.
                file.flush().ok();
                return Err(e).with_context(|| {
                    format!(
                        "download of {url} interrupted after {bytes} bytes; run the same \
                         command again to resume from {}",
                        part.display()
                    )
                });
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", part.display()))?;
        hasher.update(&buf[..n]);
        bytes += n as u64;
        bar.set_position(bytes);
    }
    bar.finish_and_clear();
    file.sync_all()
        .with_context(|| format!("cannot write {}", part.display()))?;
    drop(file);
    // ureq already fails a body that ends before its Content-Length; this also catches a
    // server that sends more than it announced.
    if let Some(n) = remaining
        && bytes != resume_from + n
    {
        remove_if_exists(&part)?;
        bail!(
            "{url}: received {bytes} bytes, the server announced {}",
            resume_from + n
        );
    }

    let sha256 = hex(&hasher.finalize());
    if !expected.is_known() {
        log::warn!(
            "no checksum is known for {url}; not verified (pass --sha256 {sha256} to pin it)"
        );
    }
    if let Err(err) = expected.check(dest, &sha256) {
        // A corrupt `.part` must not be resumed either.
        remove_if_exists(&part)?;
        return Err(err.context(format!("deleted the download from {url}")));
    }
    fs::rename(&part, dest)
        .with_context(|| format!("cannot move {} to {}", part.display(), dest.display()))?;
    Ok(Fetched {
        sha256,
        bytes,
        cached: false,
    })
}

/// One blocking HTTP(S) client for the whole download (redirects followed, proxies from the
/// environment as ureq reads them).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        // We look at 206/416 ourselves and turn other statuses into errors with the URL.
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // No total body timeout: a 200 MB file on a slow line legitimately takes long. A
        // stalled transfer can be interrupted and resumed.
        .user_agent(concat!("petal/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// GET `url`, asking for the bytes after what `part` already holds.
fn request(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
) -> Result<ureq::http::Response<ureq::Body>> {
    let offset = if part.is_file() { file_len(part)? } else { 0 };
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
    }
    req.call().with_context(|| format!("cannot download {url}"))
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

/// SHA-256 (lowercase hex) and length of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let bytes = io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((hex(&hasher.finalize()), bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot delete {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Bytes, bytes/s and time left on stderr; indicatif draws nothing when stderr is not a
/// terminal (tests, logs).
fn progress_bar(total: Option<u64>, dest: &Path) -> ProgressBar {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
    .with_prefix(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_hub_hash_prefix_rule() {
        assert_eq!(name_hash_prefix("resnet101-63fe2227.pth"), Some("63fe2227"));
        assert_eq!(
            name_hash_prefix("wide_resnet50_2-95faca4d.pth"),
            Some("95faca4d")
        );
        // The first `-hex.` wins, as with `re.search`.
        assert_eq!(name_hash_prefix("my-model-0a1b.pth"), Some("0a1b"));
        assert_eq!(name_hash_prefix("flower_photos.tgz"), None);
        assert_eq!(name_hash_prefix("model-.pth"), None);
        assert_eq!(name_hash_prefix("model-ABCD.pth"), None);
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn sha256_argument_is_validated() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_sha256(&hex), Ok("ab".repeat(32)));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }
}
