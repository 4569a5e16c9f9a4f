//! The model bundle: what `petal export`/`petal import` write and every consumer loads.
//!
//! A bundle is a folder with two files:
//! - [`META_FILE`] (`petal.json`): format version, architecture, class names in index order,
//!   input and resize sizes, normalisation, weight precision, provenance;
//! - the weights in burn's burnpack format (`f32`, or `f16` for a smaller download; BatchNorm
//!   statistics always stay `f32`).
//!
//! A bundle is self-describing: nothing that loads one needs flags repeating what it knows.

use crate::imagenet;
use crate::model::{Arch, Network, NetworkConfig, Precision};
use crate::preprocess::{DEFAULT_MAX_PIXELS, Preprocessor};
use burn::prelude::*;
use burn::store::{BurnpackStore, FloatCastAdapter, HalfPrecisionAdapter};
use burn::tensor::Bytes;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

/// The newest bundle format this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;
/// Metadata file name inside a bundle folder.
pub const META_FILE: &str = "petal.json";
/// Default weights file name inside a bundle folder.
pub const WEIGHTS_FILE: &str = "model.bpk";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle metadata is not valid: {0}")]
    Metadata(String),
    #[error(
        "bundle format version {found} is newer than this build of Petal reads ({FORMAT_VERSION}); \
         upgrade Petal"
    )]
    NewerVersion { found: u32 },
    #[error(
        "weights do not match the {arch} with {classes} classes that petal.json describes: {message}"
    )]
    Weights {
        arch: Arch,
        classes: usize,
        message: String,
    },
    #[error("cannot serialise the weights: {0}")]
    Serialise(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Contents of `petal.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    pub format_version: u32,
    pub arch: Arch,
    /// Class names in the order of the network's outputs.
    pub classes: Vec<String>,
    /// Side of the square network input (center crop).
    pub image_size: usize,
    /// Shorter side after resizing, before the crop.
    pub resize: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The number format of the weights file: f16 halves the download (convolution and linear
    /// weights); the network still computes in f32 after loading unless told otherwise.
    pub precision: Precision,
    /// Weights file, relative to the bundle folder.
    pub weights: String,
    /// Where the weights came from (a run folder, an imported file), for humans.
    #[serde(default)]
    pub source: String,
    /// The Petal version that wrote the bundle.
    #[serde(default)]
    pub created_by: String,
}

impl BundleMeta {
    /// Metadata for ImageNet-normalised weights with the given classes and sizes.
    pub fn new(arch: Arch, classes: Vec<String>, image_size: usize, resize: usize) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            arch,
            classes,
            image_size,
            resize,
            mean: imagenet::MEAN,
            std: imagenet::STD,
            precision: Precision::F32,
            weights: WEIGHTS_FILE.to_string(),
            source: String::new(),
            created_by: concat!("petal ", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// Parses and validates `petal.json`. The version is checked first, so a newer bundle is
    /// reported as such even if its other fields changed shape.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Metadata(e.to_string()))?;
        let version = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                BundleError::Metadata("missing integer field `format_version`".into())
            })?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(BundleError::NewerVersion {
                found: u32::try_from(version).unwrap_or(u32::MAX),
            });
        }
        let meta: BundleMeta =
            serde_json::from_value(value).map_err(|e| BundleError::Metadata(e.to_string()))?;
        meta.validate()?;
        Ok(meta)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("bundle metadata always serialises")
    }

    fn validate(&self) -> Result<(), BundleError> {
        let bad = |m: String| Err(BundleError::Metadata(m));
        if self.classes.is_empty() {
            return bad("`classes` is empty".into());
        }
        if self.weights.is_empty() || self.weights.contains(['/', '\\']) || self.weights == ".." {
            return bad(format!(
                "`weights` must be a plain file name, not '{}'",
                self.weights
            ));
        }
        self.preprocessor()
            .validate()
            .or_else(|e| bad(e.to_string()))
    }

    /// The eval preprocessing these weights expect.
    pub fn preprocessor(&self) -> Preprocessor {
        Preprocessor {
            resize: self.resize,
            image_size: self.image_size,
            mean: self.mean,
            std: self.std,
            max_pixels: DEFAULT_MAX_PIXELS,
            allow_truncated: false,
        }
    }

    /// The network this metadata describes, freshly initialised.
    pub fn model_config(&self) -> NetworkConfig {
        NetworkConfig::new(self.arch, self.classes.len())
    }
}

/// A loaded bundle: metadata plus a ready network.
#[derive(Debug)]
pub struct Bundle {
    pub meta: BundleMeta,
    pub model: Network,
}

impl Bundle {
    /// Pairs a network with its metadata; it must be the architecture the metadata names, with
    /// one output per class.
    pub fn new(meta: BundleMeta, model: Network) -> Result<Self, BundleError> {
        if model.arch() != meta.arch {
            return Err(BundleError::Metadata(format!(
                "the network is a {} but the metadata says {}",
                model.arch(),
                meta.arch
            )));
        }
        if model.num_classes() != meta.classes.len() {
            return Err(BundleError::Metadata(format!(
                "the network has {} outputs but {} class names were given",
                model.num_classes(),
                meta.classes.len()
            )));
        }
        Ok(Self { meta, model })
    }

    /// Loads a bundle from its two files' bytes (the browser's way: no filesystem).
    pub fn from_bytes(
        meta_json: &[u8],
        weights: Vec<u8>,
        device: &Device,
    ) -> Result<Self, BundleError> {
        let meta = BundleMeta::from_json(meta_json)?;
        let model = load_weights(&meta, weights, device)?;
        Ok(Self { meta, model })
    }

    /// Serialises the weights at `self.meta.precision`.
    pub fn weights_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let mut store = BurnpackStore::from_bytes(None)
            .metadata("petal_format_version", FORMAT_VERSION.to_string())
            .metadata("arch", self.meta.arch.name());
        if self.meta.precision == Precision::F16 {
            store = store.with_to_adapter(HalfPrecisionAdapter::new());
        }
        self.model
            .save_tensors(&mut store)
            .map_err(|e| BundleError::Serialise(e.to_string()))?;
        let bytes = store
            .get_bytes()
            .map_err(|e| BundleError::Serialise(e.to_string()))?;
        Ok(bytes.to_vec())
    }

    /// The eval preprocessing this bundle's weights expect.
    pub fn preprocessor(&self) -> Preprocessor {
        self.meta.preprocessor()
    }
}

/// Builds the network `meta` describes and fills it from burnpack `bytes`. Every tensor must be
/// present with the right shape: a bundle whose weights belong to another depth or class count
/// is rejected, naming the first offending tensors.
fn load_weights(
    meta: &BundleMeta,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<Network, BundleError> {
    let mismatch = |message: String| BundleError::Weights {
        arch: meta.arch,
        classes: meta.classes.len(),
        message,
    };
    let mut model = meta.model_config().init(device);
    // Compute in f32 whatever the storage precision. (`HalfPrecisionAdapter` would not do on
    // load: it flips the direction per tensor and would turn an f32 file into f16 weights.)
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)))
        .with_from_adapter(FloatCastAdapter::to(DType::F32))
        .allow_partial(true)
        .validate(false);
    let result = model
        .load_tensors(&mut store)
        .map_err(|e| mismatch(e.to_string()))?;
    let mut problems: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
    problems.extend(
        result
            .missing
            .iter()
            .map(|(k, _)| format!("missing tensor '{k}'")),
    );
    problems.extend(
        result
            .unused
            .iter()
            .map(|k| format!("unexpected tensor '{k}'")),
    );
    if !problems.is_empty() {
        let shown = problems.len().min(5);
        let more = problems.len() - shown;
        let mut msg = problems[..shown].join("; ");
        if more > 0 {
            msg.push_str(&format!("; and {more} more"));
        }
        return Err(mismatch(msg));
    }
    Ok(model)
}

#[cfg(feature = "fs")]
mod fs;
