//! The CUDA build (`--features cuda`, what CI builds and tests) on a machine without an NVIDIA
//! GPU: asking for CUDA is one clear error from every command, never a panic, and `auto` falls
//! back to the other backends. On a machine with the NVIDIA driver the same commands must run
//! on the GPU instead; `scripts/bench-gpu` measures that.

use crate::util::{TestCommand, nvidia_driver, petal, photo, tempdir};

/// `petal --device cuda ARGS` in `dir`: on a machine without a GPU, exit status 1 with one
/// line that says what is missing and what to use instead.
fn refused_or_ran(dir: &std::path::Path, args: &[&str]) {
    let run = TestCommand::new(dir)
        .args(["--device", "cuda"])
        .args(args)
        .run();
    if nvidia_driver() {
        run.success();
        return;
    }
    let err = run.failure();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, not:\n{err}");
    assert!(
        lines[0].starts_with("error: no usable CUDA GPU 0 (")
            && lines[0].ends_with("install the NVIDIA driver or use --device wgpu or cpu"),
        "{args:?}: {err}"
    );
    // The runtime's own reason comes along, cut to its first line.
    assert!(lines[0].len() < 400, "{err}");
}

#[test]
fn every_command_refuses_cuda_without_a_gpu_in_one_line() {
    let dir = tempdir();
    let d = dir.path();
    let bundle = crate::eval::bundle().to_str().unwrap().to_string();
    let photos = crate::util::fixtures().join("photos");
    let photos = photos.to_str().unwrap();
    let chelsea = photo("chelsea.png");
    let chelsea = chelsea.to_str().unwrap();
    crate::train::generated_photos(d, 3);
    refused_or_ran(d, &["predict", "--model", &bundle, chelsea]);
    refused_or_ran(
        d,
        &[
            "score", "--model", &bundle, "--images", photos, "-o", "s.csv",
        ],
    );
    refused_or_ran(d, &["explain", "--model", &bundle, chelsea, "-o", "cam"]);
    refused_or_ran(d, &["eval", "--model", &bundle, "--data", "d/data"]);
    refused_or_ran(
        d,
        &[
            "train",
            "--data",
            "d/data",
            "--out",
            "r",
            "--arch",
            "resnet18",
            "--image-size",
            "32",
            "--resize",
            "36",
            "--epochs",
            "1",
        ],
    );
    // f16 is a question for the device, which is missing first.
    refused_or_ran(
        d,
        &["--precision", "f16", "predict", "--model", &bundle, chelsea],
    );
}

/// `auto` in a CUDA build tries CUDA first, says why it did not use it, and runs on the
/// next backend; the answers are the CPU's.
#[test]
fn auto_falls_back_from_cuda_when_there_is_no_gpu() {
    if nvidia_driver() {
        return;
    }
    let dir = tempdir();
    let bundle = crate::eval::bundle().to_str().unwrap().to_string();
    let chelsea = photo("chelsea.png");
    let chelsea = chelsea.to_str().unwrap();
    let args = ["-v", "predict", "--model", &bundle, "--json", chelsea];
    let auto = petal(dir.path(), [&["--device", "auto"][..], &args].concat());
    let err = auto.stderr();
    let out = auto.success();
    assert!(
        err.contains("not using CUDA: no usable CUDA GPU 0"),
        "{err}"
    );
    let cpu = petal(dir.path(), args).success();
    assert_eq!(out, cpu);
}

#[test]
fn version_names_the_cuda_backend() {
    let out = petal(&std::env::temp_dir(), ["--version"]).success();
    assert!(out.contains("backends: cpu, wgpu, cuda"), "{out}");
}
