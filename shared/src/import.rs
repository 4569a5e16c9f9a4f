//! torchvision weights → [`Network`]: every key rule in one place.
//!
//! ResNet: torchvision's `state_dict` keys already match our field names except for:
//! - `layerN.M.downsample.0.*` / `.1.*` (an `nn.Sequential`) → `downsample.conv.*` / `.bn.*`;
//! - the block enum's variant name (`Basic`/`Bottleneck`), which torchvision keys lack
//!   (skipped by the store's enum-variant matching).
//!
//! ConvNeXt: torchvision's keys are `nn.Sequential` indices (`features.5.3.block.3.weight`);
//! [`convnext_rules`] maps each onto our named fields (`stages.2.blocks.3.pwconv1.weight`).
//!
//! EfficientNet: torchvision's keys are `nn.Sequential` indices too
//! (`features.2.1.block.3.1.weight`); [`efficientnet_rules`] maps them onto our named fields
//! (`stage2.1.project.bn.weight`).
//!
//! All: norm `weight`/`bias` → burn's `gamma`/`beta`, and `Linear` weights stored `[out, in]`
//! → burn's `[in, out]` (burn's `PyTorchToBurnAdapter`); `num_batches_tracked` (unused by our
//! BatchNorm) and a `module.` prefix left by `nn.DataParallel` are ignored.

use crate::model::{Arch, BlockKind, Family, Network, NetworkConfig};
use burn::prelude::*;
use burn::store::{
    ApplyError, ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `(regex, replacement)` applied to torchvision ResNet keys, in order.
fn resnet_rules() -> Vec<(String, String)> {
    [
        (r"^module\.", ""),
        (r"\.downsample\.0\.", ".downsample.conv."),
        (r"\.downsample\.1\.", ".downsample.bn."),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .into()
}

/// Our name of each layer in torchvision's `CNBlock.block` (`Sequential` index → field);
/// indices 1, 4 and 6 are the permutes and the GELU, which have no weights.
const CONVNEXT_BLOCK_LAYERS: [(usize, &str); 4] =
    [(0, "dwconv"), (2, "norm"), (3, "pwconv1"), (5, "pwconv2")];

/// `(regex, replacement)` applied to torchvision ConvNeXt keys: `features.0` is the stem,
/// `features.{2s+1}` stage `s`'s blocks and `features.{2s}` its downsampling (s ≥ 1).
fn convnext_rules() -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = [
        (r"^module\.", ""),
        (r"^features\.0\.0\.", "stem."),
        (r"^features\.0\.1\.", "stem_norm."),
        (r"^classifier\.0\.", "head_norm."),
        (r"^classifier\.2\.", "head."),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .into();
    for s in 0..4 {
        let blocks = 2 * s + 1;
        rules.push((
            format!(r"^features\.{blocks}\.(\d+)\.layer_scale$"),
            format!("stages.{s}.blocks.${{1}}.layer_scale"),
        ));
        for (index, name) in CONVNEXT_BLOCK_LAYERS {
            rules.push((
                format!(r"^features\.{blocks}\.(\d+)\.block\.{index}\."),
                format!("stages.{s}.blocks.${{1}}.{name}."),
            ));
        }
        if s > 0 {
            for (index, name) in [(0, "norm"), (1, "conv")] {
                rules.push((
                    format!(r"^features\.{}\.{index}\.", 2 * s),
                    format!("stages.{s}.downsample.{name}."),
                ));
            }
        }
    }
    rules
}

/// Our name of each layer in torchvision's `MBConv.block` (`Sequential` index → field), for
/// blocks that expand; the first stage's blocks (expansion ratio 1) have no `expand`, so their
/// indices start at `depthwise`.
const MBCONV_LAYERS: [&str; 4] = ["expand", "depthwise", "se", "project"];

/// Our layers of a convolution + BatchNorm pair (torchvision's `Conv2dNormActivation`, whose
/// `Sequential` indices are 0 and 1; its activation has no weights).
const CONV_BN_LAYERS: [&str; 2] = ["conv", "bn"];

/// `(regex, replacement)` applied to torchvision EfficientNet keys: `features.0` is the stem,
/// `features.{s}` stage `s`'s blocks (1 ≤ s ≤ 7), `features.8` the last 1×1 convolution and
/// `classifier.1` the linear layer (`classifier.0` is the dropout).
fn efficientnet_rules() -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = [
        (r"^module\.", ""),
        (r"^features\.0\.", "stem."),
        (r"^features\.8\.", "last_conv."),
        (r"^classifier\.1\.", "classifier."),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .into();
    for (index, name) in MBCONV_LAYERS[1..].iter().enumerate() {
        rules.push((
            format!(r"^features\.1\.(\d+)\.block\.{index}\."),
            format!("stage1.${{1}}.{name}."),
        ));
    }
    for (index, name) in MBCONV_LAYERS.iter().enumerate() {
        rules.push((
            format!(r"^features\.([2-7])\.(\d+)\.block\.{index}\."),
            format!("stage${{1}}.${{2}}.{name}."),
        ));
    }
    for (index, name) in CONV_BN_LAYERS.iter().enumerate() {
        rules.push((
            format!(r"^(stem|last_conv|stage\d\.\d+\.(?:expand|depthwise|project))\.{index}\."),
            format!("${{1}}.{name}."),
        ));
    }
    rules
}

/// The torchvision name of one of our EfficientNet parameter paths, if it is one. Paths that
/// other families share a first segment with (ConvNeXt's `stem.weight`) are left alone.
fn efficientnet_key(segments: &[&str]) -> Option<String> {
    // `conv.weight` → `0.weight`, `bn.gamma` → `1.gamma`.
    let conv_bn = |rest: &[&str]| match rest {
        [layer, tail @ ..] if CONV_BN_LAYERS.contains(layer) => {
            let index = CONV_BN_LAYERS.iter().position(|l| l == layer)?;
            Some(format!("{index}.{}", tail.join(".")))
        }
        _ => None,
    };
    Some(match segments {
        ["stem", rest @ ..] => format!("features.0.{}", conv_bn(rest)?),
        ["last_conv", rest @ ..] => format!("features.8.{}", conv_bn(rest)?),
        ["classifier", tail @ ("weight" | "bias")] => format!("classifier.1.{tail}"),
        [stage, i, layer, rest @ ..] => {
            let s = stage.strip_prefix("stage")?.parse::<usize>().ok()?;
            let position = MBCONV_LAYERS.iter().position(|l| l == layer)?;
            // The first stage has no `expand`: its indices start one lower.
            let index = if s == 1 {
                position.checked_sub(1)?
            } else {
                position
            };
            let tail = if *layer == "se" {
                rest.join(".")
            } else {
                conv_bn(rest).unwrap_or_else(|| rest.join("."))
            };
            (1..=7)
                .contains(&s)
                .then(|| format!("features.{s}.{i}.block.{index}.{tail}"))?
        }
        _ => return None,
    })
}

/// The torchvision name of one of our ConvNeXt parameter paths, if it is one.
fn convnext_key(segments: &[&str]) -> Option<String> {
    let tail = |rest: &[&str]| rest.join(".");
    let stage = |s: &str| s.parse::<usize>().ok();
    Some(match segments {
        ["stem", rest @ ..] => format!("features.0.0.{}", tail(rest)),
        ["stem_norm", rest @ ..] => format!("features.0.1.{}", tail(rest)),
        ["head_norm", rest @ ..] => format!("classifier.0.{}", tail(rest)),
        ["head", rest @ ..] => format!("classifier.2.{}", tail(rest)),
        ["stages", s, "downsample", layer, rest @ ..] => {
            let index = match *layer {
                "norm" => 0,
                "conv" => 1,
                _ => return None,
            };
            format!("features.{}.{index}.{}", 2 * stage(s)?, tail(rest))
        }
        ["stages", s, "blocks", i, "layer_scale"] => {
            format!("features.{}.{i}.layer_scale", 2 * stage(s)? + 1)
        }
        ["stages", s, "blocks", i, layer, rest @ ..] => {
            let (index, _) = CONVNEXT_BLOCK_LAYERS.iter().find(|(_, n)| n == layer)?;
            format!(
                "features.{}.{i}.block.{index}.{}",
                2 * stage(s)? + 1,
                tail(rest)
            )
        }
        _ => return None,
    })
}

/// The torchvision name of one of our parameter paths (for error messages).
pub fn torchvision_key(burn_path: &str) -> String {
    let segments: Vec<&str> = burn_path
        .split('.')
        .filter(|s| {
            !matches!(
                *s,
                "Basic" | "Bottleneck" | "ResNet" | "ConvNeXt" | "EfficientNet"
            )
        })
        .collect();
    let mut key = efficientnet_key(&segments)
        .or_else(|| convnext_key(&segments))
        .unwrap_or_else(|| segments.join("."));
    key = key.replace(".downsample.conv.", ".downsample.0.");
    key = key.replace(".downsample.bn.", ".downsample.1.");
    if let Some(stem) = key.strip_suffix(".gamma") {
        key = format!("{stem}.weight");
    } else if let Some(stem) = key.strip_suffix(".beta") {
        key = format!("{stem}.bias");
    }
    key
}

/// Whether a torchvision key is a `Linear` weight (stored `[out, in]`, ours `[in, out]`).
fn is_linear_weight(key: &str) -> bool {
    [
        "fc.weight",
        "classifier.2.weight",
        "classifier.1.weight",
        ".block.3.weight",
        ".block.5.weight",
    ]
    .iter()
    .any(|end| key.ends_with(end))
}

/// Whether a torchvision key belongs to the classification layer a new head replaces.
fn is_head_key(key: &str) -> bool {
    // ConvNeXt's `classifier.1` is a Flatten and EfficientNet's `classifier.2` does not
    // exist, so each of these names one family's last linear layer.
    key.starts_with("fc.") || key.starts_with("classifier.2.") || key.starts_with("classifier.1.")
}

/// What to do with the file's classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Load the head from the file: its class count must equal the model's.
    Keep,
    /// Ignore the file's last linear layer (ResNet's `fc`, ConvNeXt's `classifier.2`,
    /// EfficientNet's `classifier.1`) and keep a freshly initialised one (fine-tuning on new
    /// classes).
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: cannot read weights: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "{path}: not a torchvision ResNet, ConvNeXt or EfficientNet state_dict (no 'layerN.M.*' \
         or 'features.N.M.block.*' keys)"
    )]
    NotTorchvision { path: PathBuf },
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
    let result = match model {
        Network::ResNet(m) => apply(m, path, resnet_rules(), head),
        Network::ConvNeXt(m) => apply(m, path, convnext_rules(), head),
        Network::EfficientNet(m) => apply(m, path, efficientnet_rules(), head),
    }?;
    check(&result, path, arch, head)
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Loads the file into one family's module, with that family's key rules.
fn apply<M: ModuleSnapshot>(
    model: &mut M,
    path: &Path,
    rules: Vec<(String, String)>,
    head: Head,
) -> Result<ApplyResult, ImportError> {
    let read_err = |e: &dyn std::fmt::Display| ImportError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let keep_head: fn(&str, &str) -> bool = |_, _| true;
    let drop_head: fn(&str, &str) -> bool = |p, _| !is_head_key(&torchvision_key(p));
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
        for (from, to) in &rules {
            store = store.with_key_remapping(from, to);
        }
        model.load_from(&mut store).map_err(|e| read_err(&e))
    } else {
        let mut store = PytorchStore::from_file(path)
            .with_predicate(predicate)
            .map_indices_contiguous(false)
            .allow_partial(true)
            .validate(false);
        for (from, to) in &rules {
            store = store.with_key_remapping(from, to);
        }
        model.load_from(&mut store).map_err(|e| read_err(&e))
    }
}

/// The network shape a set of torchvision keys describes: ResNet's block layout from
/// `layerN.M.*`, EfficientNet's stage depths from `features.S.M.block.L.{0,1,fc1,fc2}.*`
/// (its block layers are themselves `Sequential`s or squeeze-excitations), ConvNeXt's from
/// `features.{2s+1}.M.block.L.*` (whose block layers are plain layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    ResNet(BlockKind, [usize; 4]),
    ConvNeXt([usize; 4]),
    EfficientNet([usize; 7]),
}

impl Found {
    fn of<'a>(keys: impl Iterator<Item = &'a str> + Clone) -> Option<Found> {
        if let Some((kind, blocks)) = layout_of(keys.clone()) {
            return Some(Found::ResNet(kind, blocks));
        }
        let mut mbconv = [0usize; 7];
        for key in keys.clone() {
            let parts: Vec<&str> = key.split('.').collect();
            if let ["features", stage, index, "block", _, layer, ..] = parts.as_slice()
                && (layer.parse::<usize>().is_ok() || matches!(*layer, "fc1" | "fc2"))
                && let (Ok(s), Ok(i)) = (stage.parse::<usize>(), index.parse::<usize>())
                && (1..=7).contains(&s)
            {
                mbconv[s - 1] = mbconv[s - 1].max(i + 1);
            }
        }
        if mbconv != [0; 7] {
            return Some(Found::EfficientNet(mbconv));
        }
        let mut depths = [0usize; 4];
        for key in keys {
            let parts: Vec<&str> = key.split('.').collect();
            if let ["features", stage, index, "block", ..] = parts.as_slice()
                && let (Ok(k), Ok(i)) = (stage.parse::<usize>(), index.parse::<usize>())
                && k % 2 == 1
                && k <= 7
            {
                depths[k / 2] = depths[k / 2].max(i + 1);
            }
        }
        (depths != [0; 4]).then_some(Found::ConvNeXt(depths))
    }

    /// Whether `arch` has this shape.
    fn fits(self, arch: Arch) -> bool {
        match (self, arch.family()) {
            (Found::ResNet(kind, blocks), family) => family == Family::ResNet { kind, blocks },
            (Found::ConvNeXt(found), Family::ConvNeXt { depths, .. }) => found == depths,
            (Found::EfficientNet(found), Family::EfficientNet { depths, .. }) => found == depths,
            (Found::ConvNeXt(_) | Found::EfficientNet(_), _) => false,
        }
    }

    /// What to call it in an error message.
    fn describe(self) -> String {
        Arch::ALL.into_iter().find(|a| self.fits(*a)).map_or_else(
            || match self {
                Found::ResNet(kind, blocks) => format!("ResNet with {kind:?} blocks {blocks:?}"),
                Found::ConvNeXt(depths) => format!("ConvNeXt with stage depths {depths:?}"),
                Found::EfficientNet(depths) => {
                    format!("EfficientNet with stage depths {depths:?}")
                }
            },
            |a| a.to_string(),
        )
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

    match Found::of(file_keys.iter().map(String::as_str)) {
        None => return Err(ImportError::NotTorchvision { path: path_buf() }),
        Some(found) if !found.fits(arch) => {
            return Err(ImportError::ArchMismatch {
                path: path_buf(),
                expected: arch,
                found: found.describe(),
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
                    if is_linear_weight(&key) {
                        d.reverse();
                    }
                    d
                };
                let hint = if is_head_key(&key) {
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
        .filter(|k| head == Head::Keep || !is_head_key(k))
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
    fn convnext_rules_and_names_are_inverse() {
        let rules: Vec<(regex::Regex, String)> = convnext_rules()
            .into_iter()
            .map(|(from, to)| (regex::Regex::new(&from).unwrap(), to))
            .collect();
        let remap = |key: &str| {
            rules.iter().fold(key.to_string(), |k, (re, to)| {
                re.replace(&k, to.as_str()).into_owned()
            })
        };
        for (torch, ours) in [
            ("features.0.0.weight", "stem.weight"),
            ("features.0.1.bias", "stem_norm.bias"),
            ("features.1.2.layer_scale", "stages.0.blocks.2.layer_scale"),
            (
                "features.5.8.block.3.weight",
                "stages.2.blocks.8.pwconv1.weight",
            ),
            ("features.7.0.block.0.bias", "stages.3.blocks.0.dwconv.bias"),
            ("features.6.0.weight", "stages.3.downsample.norm.weight"),
            ("features.2.1.weight", "stages.1.downsample.conv.weight"),
            ("classifier.0.weight", "head_norm.weight"),
            ("classifier.2.bias", "head.bias"),
        ] {
            assert_eq!(remap(torch), ours, "{torch}");
            assert_eq!(torchvision_key(ours), torch, "{ours}");
        }
        assert_eq!(
            torchvision_key("ConvNeXt.stages.2.blocks.8.norm.gamma"),
            "features.5.8.block.2.weight"
        );
    }

    #[test]
    fn efficientnet_rules_and_names_are_inverse() {
        let rules: Vec<(regex::Regex, String)> = efficientnet_rules()
            .into_iter()
            .map(|(from, to)| (regex::Regex::new(&from).unwrap(), to))
            .collect();
        let remap = |key: &str| {
            rules.iter().fold(key.to_string(), |k, (re, to)| {
                re.replace_all(&k, to.as_str()).into_owned()
            })
        };
        for (torch, ours) in [
            ("features.0.0.weight", "stem.conv.weight"),
            ("features.0.1.bias", "stem.bn.bias"),
            (
                "features.1.0.block.0.0.weight",
                "stage1.0.depthwise.conv.weight",
            ),
            (
                "features.1.0.block.0.1.running_var",
                "stage1.0.depthwise.bn.running_var",
            ),
            ("features.1.0.block.1.fc1.weight", "stage1.0.se.fc1.weight"),
            (
                "features.1.0.block.2.1.weight",
                "stage1.0.project.bn.weight",
            ),
            (
                "features.2.1.block.0.0.weight",
                "stage2.1.expand.conv.weight",
            ),
            (
                "features.4.2.block.1.1.running_mean",
                "stage4.2.depthwise.bn.running_mean",
            ),
            ("features.6.3.block.2.fc2.bias", "stage6.3.se.fc2.bias"),
            (
                "features.7.0.block.3.0.weight",
                "stage7.0.project.conv.weight",
            ),
            ("features.8.0.weight", "last_conv.conv.weight"),
            (
                "features.8.1.num_batches_tracked",
                "last_conv.bn.num_batches_tracked",
            ),
            ("classifier.1.weight", "classifier.weight"),
            ("module.classifier.1.bias", "classifier.bias"),
        ] {
            assert_eq!(remap(torch), ours, "{torch}");
            assert_eq!(
                torchvision_key(ours),
                torch.trim_start_matches("module."),
                "{ours}"
            );
        }
        assert_eq!(
            torchvision_key("EfficientNet.stage3.1.project.bn.gamma"),
            "features.3.1.block.3.1.weight"
        );
        // Other families' paths keep their own names.
        assert_eq!(torchvision_key("stem.weight"), "features.0.0.weight");
        assert_eq!(
            torchvision_key("classifier.1.weight"),
            "classifier.1.weight"
        );
        // The head a new one replaces, and its [out, in] layout.
        assert!(is_head_key(&torchvision_key("classifier.weight")));
        assert!(is_linear_weight("classifier.1.weight"));
    }

    #[test]
    fn found_names_the_family() {
        let convnext = [
            "features.1.2.block.0.weight",
            "features.5.8.layer_scale",
            "features.5.8.block.3.weight",
            "features.7.2.block.5.bias",
            "features.3.2.block.5.bias",
        ];
        let found = Found::of(convnext.into_iter()).unwrap();
        assert_eq!(found, Found::ConvNeXt([3, 3, 9, 3]));
        assert!(found.fits(Arch::ConvNeXtTiny));
        assert!(!found.fits(Arch::ResNet18));
        assert_eq!(found.describe(), "convnext_tiny");
        let resnet = Found::of(["layer1.0.conv1.weight"].into_iter()).unwrap();
        assert!(!resnet.fits(Arch::ConvNeXtTiny));
        assert!(!resnet.fits(Arch::EfficientNetB0));
        let efficientnet = [
            "features.0.0.weight",
            "features.1.0.block.1.fc1.weight",
            "features.2.1.block.0.0.weight",
            "features.3.1.block.3.1.bias",
            "features.4.2.block.2.fc2.weight",
            "features.5.2.block.0.1.running_var",
            "features.6.3.block.1.0.weight",
            "features.7.0.block.3.0.weight",
            "features.8.0.weight",
            "classifier.1.weight",
        ];
        let found = Found::of(efficientnet.into_iter()).unwrap();
        assert_eq!(found, Found::EfficientNet([1, 2, 2, 3, 3, 4, 1]));
        assert!(found.fits(Arch::EfficientNetB0));
        assert!(!found.fits(Arch::ConvNeXtTiny));
        assert_eq!(found.describe(), "efficientnet_b0");
        assert!(
            !Found::of(convnext.into_iter())
                .unwrap()
                .fits(Arch::EfficientNetB0)
        );
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
