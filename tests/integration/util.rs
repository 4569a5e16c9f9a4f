//! Helpers for Petal's integration tests, in the style of ripgrep's `tests/util.rs`: temporary
//! folders, the `petal` binary, the reference fixtures and torchvision reference runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared/fixtures` beside the checkout (override with `PETAL_FIXTURES`).
pub fn fixtures() -> PathBuf {
    std::env::var_os("PETAL_FIXTURES")
        .map_or_else(|| repo().join("../shared/fixtures"), PathBuf::from)
}

/// A reference photo by file name.
pub fn photo(name: &str) -> PathBuf {
    fixtures().join("photos").join(name)
}

/// The Python that has torch + torchvision (Debian's, unless `PETAL_PYTHON` says otherwise).
pub fn python() -> String {
    std::env::var("PETAL_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// Runs `tests/reference/torchvision_ref.py` with `args`, writing into `out`.
pub fn torchvision_reference(out: &Path, args: &[&str]) {
    let script = repo().join("tests/reference/torchvision_ref.py");
    let output = Command::new(python())
        .arg(&script)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (apt install python3-torchvision): {e}",
                python()
            )
        });
    assert!(
        output.status.success(),
        "torchvision reference failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads a `.npy` file: shape and values.
pub fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<usize>, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = file.shape().iter().map(|&d| d as usize).collect();
    (shape, file.into_vec().unwrap())
}

/// The `petal` binary cargo built for these tests, unless `PETAL_BIN` names another: with a
/// target folder shared between checkouts, `target/debug/petal` is whichever checkout built
/// last, while `target/debug/deps/petal-HASH` stays this checkout's.
pub fn petal_bin() -> std::ffi::OsString {
    std::env::var_os("PETAL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_petal").into())
}

/// A finished `petal` run.
pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn success(&self) -> String {
        assert!(
            self.output.status.success(),
            "petal failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
    /// Asserts an error (exit status 1, the README's rule for "an error stopped the
    /// command") and returns stderr.
    #[track_caller]
    pub fn failure(&self) -> String {
        let err = self.stderr();
        assert_eq!(
            self.output.status.code(),
            Some(1),
            "expected an error (exit 1):\nstdout:\n{}\nstderr:\n{err}",
            self.stdout()
        );
        assert!(!err.contains("panicked"), "petal panicked:\n{err}");
        err
    }
    /// Asserts a finished run that skipped some inputs (exit status 2) and returns stdout.
    #[track_caller]
    pub fn skipped(&self) -> String {
        assert_eq!(
            self.output.status.code(),
            Some(2),
            "expected exit 2 (some inputs skipped):\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
}

/// A `petal` command line being built, in the style of ripgrep's `TestCommand`:
/// `TestCommand::new(dir).arg("import").arg(&file).args(["--arch", "resnet18"]).success()`.
/// It runs in `dir` on the CPU backend unless a test names another device.
pub struct TestCommand {
    cmd: Command,
}

impl TestCommand {
    pub fn new(dir: &Path) -> Self {
        let mut cmd = Command::new(petal_bin());
        cmd.current_dir(dir)
            // Answers must not depend on whether the machine running the tests has a GPU.
            .env("PETAL_DEVICE", "cpu")
            // Where a test does name wgpu (lavapipe on CI), autotuning every kernel variant
            // would take minutes on a software rasteriser.
            .env("CUBECL_AUTOTUNE_LEVEL", "minimal");
        Self { cmd }
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs the command to its end.
    pub fn run(&mut self) -> Run {
        Run {
            output: self.cmd.output().expect("cannot start petal"),
        }
    }

    /// Runs it, asserts success and returns stdout.
    #[track_caller]
    pub fn success(&mut self) -> String {
        self.run().success()
    }
}

/// Runs `petal ARGS` in `dir`.
pub fn petal<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    TestCommand::new(dir).args(args).run()
}

/// Runs `petal ARGS` in `dir` with extra environment variables.
pub fn petal_env<I, S>(dir: &Path, env: &[(&str, &str)], args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = TestCommand::new(dir);
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.args(args).run()
}

/// A fresh temporary folder, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("petal-test-")
        .tempdir()
        .expect("temp dir")
}

/// `petal predict --model MODEL --json EXTRA... IMAGE` run in `dir`: the image's JSON object
/// (`file`, `top`, and `logits` with `--logits`).
pub fn predict_one(dir: &Path, model: &str, image: &Path, extra: &[&str]) -> serde_json::Value {
    let json = TestCommand::new(dir)
        .args(["predict", "--model", model, "--json"])
        .args(extra)
        .arg(image)
        .success();
    let mut all: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}:\n{json}"));
    all[0].take()
}

/// The `logits` of a `predict --json --logits` object.
pub fn logits(prediction: &serde_json::Value) -> Vec<f64> {
    prediction["logits"]
        .as_array()
        .unwrap_or_else(|| panic!("no logits in {prediction}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Whether this machine has the NVIDIA kernel driver loaded (CUDA tests expect a clean error
/// without it).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub fn nvidia_driver() -> bool {
    Path::new("/proc/driver/nvidia/version").exists()
}
