//! No input may take a command down: extreme aspect ratios preprocess in bounded memory and
//! match Pillow / torchvision, a corpus of hostile files generated here goes through `predict`,
//! `score`, `eval` and the training data loader with every file either classified or reported
//! on one line naming it, a JPEG cut off mid-stream is refused like Pillow refuses it, and a
//! clean run on a machine without a display prints nothing on stderr.

use crate::eval::bundle;
use crate::hostile::{Expect, strip, write_corpus};
use crate::util::{fixtures, petal_bin, photo, python, read_npy, tempdir};
use petal_shared::Preprocessor;
use petal_trainer::data::Sample;
use petal_trainer::data::augment::Augment;
use petal_trainer::data::batches::{Augmented, for_each_batch};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any one command of these tests may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion, killing it (and failing the test) after [`HANG`].
fn run_bounded(mut cmd: Command) -> Output {
    let dir = tempdir();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start the command");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > HANG {
            child.kill().ok();
            child.wait().ok();
            panic!("{cmd:?} still running after {HANG:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// `petal ARGS` in `dir` on the CPU backend, bounded in time; panics are always a failure.
fn petal(dir: &Path, args: &[&std::ffi::OsStr]) -> (Output, String) {
    let mut cmd = Command::new(petal_bin());
    cmd.current_dir(dir).env("PETAL_DEVICE", "cpu").args(args);
    let out = run_bounded(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "petal panicked on {args:?}:\n{stderr}"
    );
    (out, stderr)
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

// ---------------------------------------------------------------------------------------------
// Extreme aspect ratios

/// Peak resident memory of a finished `/usr/bin/time -v` run, in MiB.
fn max_rss_mib(time_stderr: &str) -> f64 {
    let line = time_stderr
        .lines()
        .find(|l| l.contains("Maximum resident set size"))
        .unwrap_or_else(|| panic!("no peak RSS in:\n{time_stderr}"));
    let kib: f64 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    kib / 1024.0
}

/// `petal preprocess IMAGE --resize R --image-size C -o OUT` under `/usr/bin/time -v` (when the
/// machine has it): the tensor, and the peak RSS in MiB.
fn preprocess(dir: &Path, image: &Path, resize: usize, crop: usize) -> (Vec<f32>, Option<f64>) {
    let out = dir.join("ours.npy");
    let args: Vec<std::ffi::OsString> = vec![
        "preprocess".into(),
        image.into(),
        "--resize".into(),
        resize.to_string().into(),
        "--image-size".into(),
        crop.to_string().into(),
        "-o".into(),
        out.clone().into(),
    ];
    let timed = Path::new("/usr/bin/time").exists();
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-v").arg(petal_bin());
        c
    } else {
        Command::new(petal_bin())
    };
    cmd.args(&args);
    let output = run_bounded(cmd);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "preprocess {} failed:\n{stderr}",
        image.display()
    );
    let (shape, values) = read_npy::<f32>(&out);
    assert_eq!(shape, [3, crop, crop]);
    (values, timed.then(|| max_rss_mib(&stderr)))
}

/// Pillow / torchvision references for the extreme images, written as float32 CHW `.npy`.
///
/// `full`: torchvision's own `Resize(R)` → `CenterCrop(C)` → `ToTensor` → `Normalize` on the
/// image. `one_axis`: for a 1-pixel-wide (or -high) image, where torchvision would need a
/// 256 × 15 million image (15 GB in Pillow), the same result computed in Pillow along the long
/// axis only: a 1-pixel-wide source has a single tap per output column, of weight exactly 1, so
/// Pillow's horizontal pass copies the column to every output column unchanged and the crop is
/// Pillow's vertical resize of that column, repeated across.
const REFERENCE: &str = r#"
import sys, numpy as np, torch
from PIL import Image
from torchvision import transforms as T
mode, src, resize, crop, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
img = Image.open(src).convert("RGB")
norm = T.Compose([T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
if mode == "full":
    t = norm(T.CenterCrop(crop)(T.Resize(resize)(img)))
else:
    w, h = img.size
    tall = w == 1
    if not tall:
        img = img.transpose(Image.Transpose.TRANSPOSE)
        w, h = h, w
    long = int(resize * h / w)
    col = np.asarray(img.resize((1, long), Image.Resampling.BILINEAR))
    top = int(round((long - crop) / 2.0))
    part = np.repeat(col[top:top + crop], crop, axis=1)
    if not tall:
        part = part.transpose(1, 0, 2)
    t = norm(Image.fromarray(np.ascontiguousarray(part)))
np.save(out, t.numpy().astype(np.float32))
"#;

fn reference(dir: &Path, mode: &str, image: &Path, resize: usize, crop: usize) -> Vec<f32> {
    let out = dir.join("reference.npy");
    let mut cmd = Command::new(python());
    cmd.args(["-c", REFERENCE, mode])
        .arg(image)
        .args([resize.to_string(), crop.to_string()])
        .arg(&out);
    let output = run_bounded(cmd);
    assert!(
        output.status.success(),
        "torchvision reference failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    read_npy::<f32>(&out).1
}

fn assert_bits_equal(ours: &[f32], want: &[f32], what: &str) {
    assert_eq!(ours.len(), want.len(), "{what}");
    let differ = ours
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(
        differ, 0,
        "{what}: {differ} values differ from the reference"
    );
}

/// Peak RSS allowed for `petal preprocess` on these images. The process itself (binary, burn,
/// allocator arenas) takes ~20 MiB; the documented bound on top is the decoded image (here
/// 180 KB) plus a few crops. Without the windowed resize, the 1×60000 image asked for 11.8 GB.
const RSS_LIMIT_MIB: f64 = 64.0;

#[test]
fn extreme_aspect_ratios_preprocess_in_bounded_memory_like_torchvision() {
    let dir = tempdir();
    let cases = [
        ("tall_1x60000.png", 1, 60_000),
        ("wide_60000x1.png", 60_000, 1),
        ("dot_1x1.png", 1, 1),
    ];
    for (name, w, h) in cases {
        let path = dir.path().join(name);
        strip(w, h).save(&path).unwrap();

        // torchvision's own pipeline wherever Pillow can hold the resized image.
        let (resize, crop) = if w * h == 1 { (256, 224) } else { (16, 12) };
        let (ours, _) = preprocess(dir.path(), &path, resize, crop);
        let want = reference(dir.path(), "full", &path, resize, crop);
        assert_bits_equal(
            &ours,
            &want,
            &format!("{name} r{resize}c{crop} vs torchvision"),
        );

        // The default sizes: 256 × 15,360,000 resized, of which only the crop is computed.
        let (ours, rss) = preprocess(dir.path(), &path, 256, 224);
        if w * h > 1 {
            let want = reference(dir.path(), "one_axis", &path, 256, 224);
            assert_bits_equal(&ours, &want, &format!("{name} r256c224 vs Pillow"));
        }
        if let Some(rss) = rss {
            println!("{name}: petal preprocess peak RSS {rss:.1} MiB");
            assert!(
                rss < RSS_LIMIT_MIB,
                "{name}: peak RSS {rss:.1} MiB over {RSS_LIMIT_MIB} MiB"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Truncated JPEGs

/// Whether Pillow can `convert("RGB")` the file; its error message otherwise.
fn pillow_opens(path: &Path) -> Result<(), String> {
    let script = "import sys\nfrom PIL import Image\ntry:\n    Image.open(sys.argv[1]).convert('RGB')\nexcept Exception as e:\n    print(e)\n    sys.exit(3)";
    let mut cmd = Command::new(python());
    cmd.args(["-c", script]).arg(path);
    let out = run_bounded(cmd);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[test]
fn jpeg_cut_mid_stream_is_refused_like_pillow_unless_allowed() {
    let dir = tempdir();
    let full = std::fs::read(photo("coffee_q90.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &full[..5000]).unwrap();

    let pillow = pillow_opens(&cut).unwrap_err();
    assert!(
        pillow.contains("image file is truncated"),
        "Pillow: {pillow}"
    );

    let model = bundle();
    let predict = |extra: &[&str]| {
        let mut args = vec![
            os("predict"),
            os("--model"),
            model.as_os_str(),
            os("--json"),
        ];
        args.extend(extra.iter().map(|s| os(s)));
        args.push(cut.as_os_str());
        petal(dir.path(), &args)
    };
    let (out, stderr) = predict(&[]);
    assert!(!out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["error"], "image file is truncated", "{json}");
    assert_eq!(
        stderr.trim(),
        format!("error: {}: image file is truncated", cut.display())
    );

    let (out, stderr) = predict(&["--allow-truncated"]);
    assert!(out.status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json[0]["top"].is_array(), "{json}");
    assert_eq!(
        stderr.trim(),
        format!(
            "warning: {}: image file is truncated; classifying what it holds",
            cut.display()
        )
    );

    // The whole file, with its end marker, is not truncated.
    let whole = dir.path().join("whole.jpg");
    std::fs::write(&whole, &full).unwrap();
    let (out, stderr) = petal(
        dir.path(),
        &[
            os("predict"),
            os("--model"),
            model.as_os_str(),
            whole.as_os_str(),
        ],
    );
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
}

/// Checks one command's per-file report: each refused file has exactly one stderr line, which
/// names it and gives the expected reason; classified files appear on no stderr line.
fn check_stderr(stderr: &str, expect: &BTreeMap<String, Expect>, what: &str) {
    for line in stderr.lines() {
        let named: Vec<&String> = expect
            .keys()
            .filter(|n| line.contains(n.as_str()))
            .collect();
        assert_eq!(
            named.len(),
            1,
            "{what}: stderr line names no single file: {line}"
        );
        let reason = expect[named[0]]
            .unwrap_or_else(|| panic!("{what}: {} should be classified: {line}", named[0]));
        assert!(
            line.contains(reason),
            "{what}: expected '{reason}' in: {line}"
        );
    }
    for (name, e) in expect {
        let lines = stderr.lines().filter(|l| l.contains(name.as_str())).count();
        let want = usize::from(e.is_some());
        assert_eq!(
            lines, want,
            "{what}: {name} on {lines} stderr line(s):\n{stderr}"
        );
    }
}

#[test]
fn hostile_files_are_classified_or_reported_by_name_everywhere() {
    let dir = tempdir();
    let corpus = dir.path().join("data/daisy");
    let expect = write_corpus(&corpus, &photo("coffee_q90.jpg"), &python());
    let model = bundle();

    // predict: one JSON record per file, `top` or `error`, and one stderr line per error.
    let mut args = vec![
        os("predict"),
        os("--model"),
        model.as_os_str(),
        os("--json"),
    ];
    let paths: Vec<PathBuf> = expect.keys().map(|n| corpus.join(n)).collect();
    args.extend(paths.iter().map(|p| p.as_os_str()));
    let (out, stderr) = petal(dir.path(), &args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "some files are unreadable: exit 2 (inputs skipped):\n{stderr}"
    );
    let records: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (record, (name, e)) in records.as_array().unwrap().iter().zip(&expect) {
        assert!(record["file"].as_str().unwrap().ends_with(name.as_str()));
        match e {
            None => assert!(record["top"].is_array(), "{name}: {record}"),
            Some(reason) => {
                let error = record["error"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {record}"));
                assert!(error.contains(reason), "{name}: {error}");
            }
        }
    }
    println!("predict's report on the corpus:\n{stderr}");
    check_stderr(&stderr, &expect, "predict");

    // score: a row per classified file, a warning line per refused one.
    let (out, stderr) = petal(
        dir.path(),
        &[
            os("score"),
            os("--model"),
            model.as_os_str(),
            os("--images"),
            corpus.as_os_str(),
            os("--out"),
            os("scores.csv"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "inputs skipped: {stderr}");
    check_stderr(&stderr, &expect, "score");
    let csv = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    let good: Vec<&String> = expect
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(csv.lines().count(), 1 + good.len(), "{csv}");
    for name in &good {
        assert!(
            csv.contains(name.as_str()),
            "{name} missing from the CSV:\n{csv}"
        );
    }

    // eval: the corpus is the "daisy" class; one readable image in each other class.
    for class in ["dandelion", "rose", "sunflower", "tulip"] {
        let d = dir.path().join("data").join(class);
        std::fs::create_dir_all(&d).unwrap();
        strip(50, 44).save(d.join("one.png")).unwrap();
    }
    let (out, stderr) = petal(
        dir.path(),
        &[
            os("eval"),
            os("--model"),
            model.as_os_str(),
            os("--data"),
            os("data"),
            os("--json"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "inputs skipped: {stderr}");
    check_stderr(&stderr, &expect, "eval");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], good.len() + 4);
    assert_eq!(
        report["failed"].as_array().unwrap().len(),
        expect.len() - good.len()
    );

    // The training data loader, with eval preprocessing and with augmentation: refused files
    // come back in `failed` with the same reasons, the others as tensors.
    let pre = Preprocessor::new(36, 32).unwrap();
    let samples: Vec<Sample> = paths
        .iter()
        .map(|p| Sample {
            path: p.clone(),
            label: 0,
        })
        .collect();
    let augment = Augment::recipe(32);
    for aug in [
        None,
        Some(Augmented {
            augment: &augment,
            seed: 11,
        }),
    ] {
        // As training streams them: the whole folder as one batch.
        let mut streamed = Vec::new();
        for_each_batch(
            vec![samples.clone()],
            0,
            &pre,
            |_| aug,
            |_, batch| {
                streamed.push(batch);
                Ok(true)
            },
        )
        .unwrap();
        let batch = streamed.pop().expect("one batch");
        assert_eq!(batch.labels.len(), good.len());
        assert_eq!(batch.images.len(), good.len() * 3 * 32 * 32);
        assert!(batch.images.iter().all(|v| v.is_finite()));
        let failed: BTreeMap<String, String> = batch
            .failed
            .iter()
            .map(|(p, e)| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    e.clone(),
                )
            })
            .collect();
        for (name, e) in &expect {
            match (e, failed.get(name)) {
                (None, None) => {}
                (Some(reason), Some(error)) => {
                    assert!(error.contains(reason), "loader, {name}: {error}");
                    assert!(!error.contains('\n'), "loader, {name}: {error}");
                }
                (e, got) => panic!("loader, {name}: expected {e:?}, got {got:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A clean stderr on a machine without a display

#[test]
fn predict_with_auto_device_and_no_display_prints_nothing_on_stderr() {
    let dir = tempdir();
    let mut cmd = Command::new(petal_bin());
    cmd.current_dir(dir.path())
        .env_remove("PETAL_DEVICE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .env_remove("RUST_LOG")
        .env("CUBECL_AUTOTUNE_LEVEL", "minimal")
        .args(["predict", "--model"])
        .arg(bundle())
        .arg(fixtures().join("photos/chelsea.png"));
    let out = run_bounded(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("chelsea.png"),
        "no prediction printed"
    );
    assert_eq!(stderr, "", "a clean predict run wrote to stderr");
}
