//! torchvision weights → [`Network`]. The key rules are each family's own
//! ([`FamilyInfo::torchvision_keys`](crate::model::FamilyInfo), one table read in both
//! directions); what is common to every family is here:
//!
//! - a `module.` prefix left by `nn.DataParallel` is dropped;
//! - burn's enum variants (ResNet's `Basic`/`Bottleneck`) are not in torchvision's keys (the
//!   store skips them);
//! - norm `weight`/`bias` → burn's `gamma`/`beta`, and `Linear` weights stored `[out, in]` →
//!   burn's `[in, out]` (burn's `PyTorchToBurnAdapter`); `num_batches_tracked` (unused by our
//!   BatchNorm) is ignored.

use crate::model::family::{self, Detected, FAMILIES};
use crate::model::keys::{KeyRule, torchvision_name};
use crate::model::{Arch, Network, NetworkConfig};
use burn::prelude::*;
use burn::store::{ApplyError, ApplyResult, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The torchvision name of one of `arch`'s parameter paths (for error messages).
pub fn torchvision_key(arch: Arch, burn_path: &str) -> String {
    torchvision_name(&(arch.family_info().torchvision_keys)(), burn_path)
}

/// Whether `path` (segments, `.`-separated) is `prefix` or lies under it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Whether one of our parameter paths belongs to the classification layer a new head replaces.
/// burn's predicate is a plain `fn`, which cannot know the network's family, so every family's
/// head is tested: no family has a path under another's head (a unit test checks it).
fn is_head_path(path: &str, _container: &str) -> bool {
    let path: Vec<&str> = path
        .split('.')
        .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
        .collect();
    let path = path.join(".");
    FAMILIES.iter().any(|f| under(&path, f.head))
}

/// Whether a torchvision key belongs to `arch`'s classification layer.
fn is_head_key(arch: Arch, key: &str) -> bool {
    under(key, &torchvision_key(arch, arch.family_info().head))
}

/// What to do with the file's classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Load the head from the file: its class count must equal the model's.
    Keep,
    /// Ignore the file's last linear layer (the family's head: ResNet's `fc`, ConvNeXt's
    /// `classifier.2`, …) and keep a freshly initialised one (fine-tuning on new classes).
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read weights: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: not a torchvision state_dict of a family Petal builds ({families})")]
    NotTorchvision { path: PathBuf, families: String },
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

/// Loads a torchvision `state_dict` (`.pth`/`.pt` pickle, zip or legacy format, or
/// `.safetensors`) into a new `arch` network with `num_classes` outputs.
pub fn load_torchvision(
    path: &Path,
    arch: Arch,
    num_classes: usize,
    head: Head,
    device: &Device,
) -> Result<(Network, ImportReport), ImportError> {
    let mut model = NetworkConfig::new(arch, num_classes).init(device);
    let report = import_into(&mut model, path, head)?;
    Ok((model, report))
}

/// Like [`load_torchvision`], into an existing network.
pub fn import_into(
    model: &mut Network,
    path: &Path,
    head: Head,
) -> Result<ImportReport, ImportError> {
    if !path.is_file() {
        return Err(ImportError::Read {
            path: path.to_path_buf(),
            message: "no such file".into(),
        });
    }
    let arch = model.arch();
    let rules = (arch.family_info().torchvision_keys)();
    let result = apply(model, path, &rules, head)?;
    check(&result, path, arch, head)
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Loads the file into `model`, with its family's key rules.
fn apply(
    model: &mut Network,
    path: &Path,
    rules: &[KeyRule],
    head: Head,
) -> Result<ApplyResult, ImportError> {
    let read_err = |e: &dyn std::fmt::Display| ImportError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let keep_head: fn(&str, &str) -> bool = |_, _| true;
    let drop_head: fn(&str, &str) -> bool = |p, c| !is_head_path(p, c);
    let rules: Vec<(String, String)> = std::iter::once((r"^module\.".into(), String::new()))
        .chain(rules.iter().map(KeyRule::to_petal_regex))
        .collect();
    let predicate = match head {
        Head::Keep => keep_head,
        Head::Replace => drop_head,
    };
    // The two stores share these options but no trait to set them through.
    macro_rules! load {
        ($store:expr) => {{
            let mut store = $store
                .with_predicate(predicate)
                .map_indices_contiguous(false)
                .allow_partial(true)
                .validate(false);
            for (from, to) in &rules {
                store = store.with_key_remapping(from, to);
            }
            model.load_tensors(&mut store).map_err(|e| read_err(&e))
        }};
    }
    if is_safetensors(path) {
        load!(
            SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .skip_enum_variants(true)
        )
    } else {
        load!(PytorchStore::from_file(path))
    }
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
        .map(|k| torchvision_key(arch, k))
        .collect();

    let keys: Vec<&str> = file_keys.iter().map(String::as_str).collect();
    match family::detect(&keys) {
        None => {
            let families: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
            return Err(ImportError::NotTorchvision {
                path: path_buf(),
                families: families.join(", "),
            });
        }
        Some(Detected::Arch(found)) if found == arch => {}
        Some(found) => {
            return Err(ImportError::ArchMismatch {
                path: path_buf(),
                expected: arch,
                found: match found {
                    Detected::Arch(a) => a.to_string(),
                    Detected::Other(description) => description,
                },
            });
        }
    }

    if let Some(err) = result.errors.first() {
        return Err(match err {
            ApplyError::ShapeMismatch {
                path: key,
                expected,
                found,
            } => {
                let key = torchvision_key(arch, key);
                // Show Linear weights (the only 2-D weights) in PyTorch's [out, in] order, as
                // the file stores them.
                let torch_order = |s: &burn::tensor::Shape| {
                    let mut d = s.to_vec();
                    if d.len() == 2 && key.ends_with(".weight") {
                        d.reverse();
                    }
                    d
                };
                let hint = if is_head_key(arch, &key) {
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
        .map(|(k, _)| torchvision_key(arch, k))
        .filter(|k| head == Head::Keep || !is_head_key(arch, k))
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
            .map(|k| torchvision_key(arch, k))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::ModuleSnapshot;

    /// `key` through the regexes burn-store applies on import, in order.
    fn imported_name(arch: Arch, key: &str) -> String {
        let rules = (arch.family_info().torchvision_keys)();
        std::iter::once((r"^module\.".to_string(), String::new()))
            .chain(rules.iter().map(KeyRule::to_petal_regex))
            .fold(key.to_string(), |k, (from, to)| {
                let re = regex::Regex::new(&from).unwrap();
                re.replace_all(&k, to.as_str()).into_owned()
            })
    }

    /// Every parameter of every network Petal builds: its torchvision name imports back to
    /// it (burn's norm names aside), and no two parameters share a torchvision name.
    #[test]
    fn every_parameter_maps_to_torchvision_and_back() {
        for arch in Arch::ALL {
            let model = NetworkConfig::new(arch, 10).init(&Device::flex());
            let mut seen = BTreeSet::new();
            // With burn's enum variants in the paths, as the store sees them.
            for snapshot in model.collect(None, None, false) {
                let path = snapshot.name;
                let key = torchvision_key(arch, &path);
                assert!(seen.insert(key.clone()), "{arch}: {key} twice");
                let ours: Vec<&str> = path
                    .split('.')
                    .filter(|s| !s.starts_with(|c: char| c.is_ascii_uppercase()))
                    .collect();
                let ours = ours.join(".");
                let ours = ours
                    .strip_suffix(".gamma")
                    .map(|s| format!("{s}.weight"))
                    .or_else(|| ours.strip_suffix(".beta").map(|s| format!("{s}.bias")))
                    .unwrap_or(ours);
                assert_eq!(imported_name(arch, &key), ours, "{arch}: {path} as {key}");
                assert_eq!(
                    imported_name(arch, &format!("module.{key}")),
                    ours,
                    "{arch}: nn.DataParallel's prefix"
                );
                // The head, and only the head, is what a new head replaces.
                assert_eq!(
                    is_head_path(&path, ""),
                    is_head_key(arch, &key),
                    "{arch}: {path}"
                );
            }
            assert!(
                seen.iter().any(|k| is_head_key(arch, k)),
                "{arch} has a head"
            );
        }
    }

    #[test]
    fn torchvision_names_of_each_family() {
        for (arch, ours, torch) in [
            (
                Arch::ResNet50,
                "layer2.0.Bottleneck.downsample.bn.gamma",
                "layer2.0.downsample.1.weight",
            ),
            (
                Arch::ResNet18,
                "layer1.1.Basic.conv2.weight",
                "layer1.1.conv2.weight",
            ),
            (Arch::ResNet18, "bn1.beta", "bn1.bias"),
            (Arch::ResNet18, "fc.weight", "fc.weight"),
            (
                Arch::ConvNeXtTiny,
                "ConvNeXt.stages.2.blocks.8.norm.gamma",
                "features.5.8.block.2.weight",
            ),
            (
                Arch::ConvNeXtTiny,
                "stages.0.blocks.2.layer_scale",
                "features.1.2.layer_scale",
            ),
            (
                Arch::ConvNeXtTiny,
                "stages.3.downsample.norm.weight",
                "features.6.0.weight",
            ),
            (Arch::ConvNeXtTiny, "head.bias", "classifier.2.bias"),
            (
                Arch::EfficientNetB0,
                "EfficientNet.stage3.1.project.bn.gamma",
                "features.3.1.block.3.1.weight",
            ),
            (
                Arch::EfficientNetB0,
                "stage1.0.depthwise.conv.weight",
                "features.1.0.block.0.0.weight",
            ),
            (
                Arch::EfficientNetB0,
                "stage6.3.se.fc2.bias",
                "features.6.3.block.2.fc2.bias",
            ),
            (
                Arch::EfficientNetB0,
                "last_conv.conv.weight",
                "features.8.0.weight",
            ),
            (
                Arch::EfficientNetB0,
                "classifier.weight",
                "classifier.1.weight",
            ),
        ] {
            assert_eq!(torchvision_key(arch, ours), torch, "{arch}: {ours}");
        }
    }

    #[test]
    fn no_family_reaches_under_another_familys_head() {
        for arch in Arch::ALL {
            let model = NetworkConfig::new(arch, 10).init(&Device::flex());
            let own = arch.family_info();
            // With burn's enum variants in the paths, as the store sees them.
            for snapshot in model.collect(None, None, false) {
                let path = snapshot.name;
                for other in FAMILIES.iter().filter(|f| f.name != own.name) {
                    assert!(
                        !under(&path, other.head),
                        "{arch}: {path} under {}",
                        other.head
                    );
                }
            }
        }
    }
}
