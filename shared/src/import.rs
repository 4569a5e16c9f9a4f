//! torchvision weights → [`ResNet`]: every key rule in one place.
//!
//! torchvision's `state_dict` keys already match our field names except for:
//! - `layerN.M.downsample.0.*` / `.1.*` (an `nn.Sequential`) → `downsample.conv.*` / `.bn.*`;
//! - BatchNorm `weight`/`bias` → burn's `gamma`/`beta`, and `Linear` weights stored `[out, in]`
//!   → burn's `[in, out]` (both done by burn's `PyTorchToBurnAdapter`);
//! - the block enum's variant name (`Basic`/`Bottleneck`), which torchvision keys lack
//!   (skipped by the store's enum-variant matching);
//! - `num_batches_tracked` (unused by inference and by our BatchNorm) and a `module.` prefix
//!   left by `nn.DataParallel`, both ignored.

use crate::model::{Arch, BlockKind, ResNet, ResNetConfig};
use burn::prelude::*;
use burn::store::{
    ApplyError, ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `(regex, replacement)` applied to torchvision keys, in order.
const KEY_RULES: [(&str, &str); 3] = [
    (r"^module\.", ""),
    (r"\.downsample\.0\.", ".downsample.conv."),
    (r"\.downsample\.1\.", ".downsample.bn."),
];

/// The torchvision name of one of our parameter paths (for error messages).
pub fn torchvision_key(burn_path: &str) -> String {
    let segments: Vec<&str> = burn_path
        .split('.')
        .filter(|s| !matches!(*s, "Basic" | "Bottleneck"))
        .collect();
    let mut key = segments.join(".");
    key = key.replace(".downsample.conv.", ".downsample.0.");
    key = key.replace(".downsample.bn.", ".downsample.1.");
    if let Some(stem) = key.strip_suffix(".gamma") {
        key = format!("{stem}.weight");
    } else if let Some(stem) = key.strip_suffix(".beta") {
        key = format!("{stem}.bias");
    }
    key
}

/// What to do with the file's classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Load `fc` from the file: its class count must equal the model's.
    Keep,
    /// Ignore the file's `fc` and keep a freshly initialised head (fine-tuning on new classes).
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read weights: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: not a torchvision ResNet state_dict (no 'layerN.M.*' keys)")]
    NotResNet { path: PathBuf },
    #[error("{path}: the file holds a {found} but {expected} was requested")]
    ArchMismatch {
        path: PathBuf,
        expected: Arch,
        found: String,
    },
    #[error("{path}: {} tensor(s) missing for {arch}: {}", keys.len(), keys.join(", "))]
    MissingKeys {
        path: PathBuf,
        arch: Arch,
        keys: Vec<String>,
    },
    #[error("{path}: tensor '{key}' has shape {found:?} but {arch} needs {expected:?}{hint}")]
    ShapeMismatch {
        path: PathBuf,
        arch: Arch,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        hint: &'static str,
    },
    #[error("{path}: {message}")]
    Other { path: PathBuf, message: String },
}

/// What an import did, for logs.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Tensors copied from the file.
    pub applied: usize,
    /// File keys that were not used (`num_batches_tracked`, a replaced head).
    pub ignored: Vec<String>,
}

/// Loads a torchvision ResNet `state_dict` (`.pth`/`.pt` pickle, zip or legacy format, or
/// `.safetensors`) into a new `arch` network with `num_classes` outputs.
pub fn load_torchvision(
    path: &Path,
    arch: Arch,
    num_classes: usize,
    head: Head,
    device: &Device,
) -> Result<(ResNet, ImportReport), ImportError> {
    let mut model = ResNetConfig::new(arch, num_classes).init(device);
    let report = import_into(&mut model, path, arch, head)?;
    Ok((model, report))
}

/// Like [`load_torchvision`], into an existing network of depth `arch`.
pub fn import_into(
    model: &mut ResNet,
    path: &Path,
    arch: Arch,
    head: Head,
) -> Result<ImportReport, ImportError> {
    if !path.is_file() {
        return Err(ImportError::Read {
            path: path.to_path_buf(),
            message: "no such file".into(),
        });
    }
    let result = apply(model, path, head)?;
    check(&result, path, arch, head)
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

fn apply(model: &mut ResNet, path: &Path, head: Head) -> Result<ApplyResult, ImportError> {
    let read_err = |e: &dyn std::fmt::Display| ImportError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let keep_head: fn(&str, &str) -> bool = |_, _| true;
    let drop_head: fn(&str, &str) -> bool = |p, _| !p.starts_with("fc.");
    let predicate = match head {
        Head::Keep => keep_head,
        Head::Replace => drop_head,
    };
    if is_safetensors(path) {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .skip_enum_variants(true)
            .with_predicate(predicate)
            .map_indices_contiguous(false)
            .allow_partial(true)
            .validate(false);
        for (from, to) in KEY_RULES {
            store = store.with_key_remapping(from, to);
        }
        model.load_from(&mut store).map_err(|e| read_err(&e))
    } else {
        let mut store = PytorchStore::from_file(path)
            .with_predicate(predicate)
            .map_indices_contiguous(false)
            .allow_partial(true)
            .validate(false);
        for (from, to) in KEY_RULES {
            store = store.with_key_remapping(from, to);
        }
        model.load_from(&mut store).map_err(|e| read_err(&e))
    }
}

/// The block layout a set of (remapped) file keys describes.
fn layout_of<'a>(keys: impl Iterator<Item = &'a str>) -> Option<(BlockKind, [usize; 4])> {
    let mut blocks = [0usize; 4];
    let mut bottleneck = false;
    for key in keys {
        let mut parts = key.split('.');
        let (Some(layer), Some(index)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Some(n), Ok(i)) = (
            layer
                .strip_prefix("layer")
                .and_then(|n| n.parse::<usize>().ok()),
            index.parse::<usize>(),
        ) else {
            continue;
        };
        if (1..=4).contains(&n) {
            blocks[n - 1] = blocks[n - 1].max(i + 1);
            bottleneck |= key.split('.').any(|s| s == "conv3");
        }
    }
    let kind = if bottleneck {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    (blocks != [0; 4]).then_some((kind, blocks))
}

fn check(
    result: &ApplyResult,
    path: &Path,
    arch: Arch,
    head: Head,
) -> Result<ImportReport, ImportError> {
    let path_buf = || path.to_path_buf();
    let file_keys: BTreeSet<String> = result
        .applied
        .iter()
        .chain(&result.unused)
        .chain(&result.skipped)
        .map(|k| torchvision_key(k))
        .collect();

    match layout_of(file_keys.iter().map(String::as_str)) {
        None => return Err(ImportError::NotResNet { path: path_buf() }),
        Some((kind, blocks)) if (kind, blocks) != (arch.block_kind(), arch.blocks()) => {
            let found = Arch::from_layout(kind, blocks).map_or_else(
                || format!("ResNet with {kind:?} blocks {blocks:?}"),
                |a| a.to_string(),
            );
            return Err(ImportError::ArchMismatch {
                path: path_buf(),
                expected: arch,
                found,
            });
        }
        Some(_) => {}
    }

    if let Some(err) = result.errors.first() {
        return Err(match err {
            ApplyError::ShapeMismatch {
                path: key,
                expected,
                found,
            } => {
                let key = torchvision_key(key);
                // Show Linear weights in PyTorch's [out, in] order, as the file stores them.
                let torch_order = |s: &burn::tensor::Shape| {
                    let mut d = s.to_vec();
                    if key == "fc.weight" {
                        d.reverse();
                    }
                    d
                };
                let hint = if key.starts_with("fc.") {
                    " (a different class count: replace the head to fine-tune on new classes)"
                } else {
                    ""
                };
                ImportError::ShapeMismatch {
                    path: path_buf(),
                    arch,
                    expected: torch_order(expected),
                    found: torch_order(found),
                    key,
                    hint,
                }
            }
            other => ImportError::Other {
                path: path_buf(),
                message: other.to_string(),
            },
        });
    }

    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(k, _)| torchvision_key(k))
        .filter(|k| head == Head::Keep || !k.starts_with("fc."))
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::MissingKeys {
            path: path_buf(),
            arch,
            keys: missing,
        });
    }

    Ok(ImportReport {
        applied: result.applied.len(),
        ignored: result
            .unused
            .iter()
            .chain(&result.skipped)
            .map(|k| torchvision_key(k))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_back_to_torchvision_names() {
        assert_eq!(
            torchvision_key("layer2.0.Bottleneck.downsample.bn.gamma"),
            "layer2.0.downsample.1.weight"
        );
        assert_eq!(
            torchvision_key("layer1.1.Basic.conv2.weight"),
            "layer1.1.conv2.weight"
        );
        assert_eq!(torchvision_key("bn1.beta"), "bn1.bias");
        assert_eq!(torchvision_key("fc.weight"), "fc.weight");
    }

    #[test]
    fn layout_from_keys() {
        let keys = [
            "layer1.0.conv1.weight",
            "layer1.1.conv3.weight",
            "layer4.2.bn1.bias",
            "fc.bias",
        ];
        let (kind, blocks) = layout_of(keys.into_iter()).unwrap();
        assert_eq!(kind, BlockKind::Bottleneck);
        assert_eq!(blocks, [2, 0, 0, 3]);
        assert!(layout_of(["fc.weight"].into_iter()).is_none());
    }
}
