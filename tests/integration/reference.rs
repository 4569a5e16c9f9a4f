//! torchvision reference runs shared by several tests (each generated once per test binary).

use crate::util::{fixtures, tempdir, torchvision_reference};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A folder holding `ARCH.pth` (+ `.safetensors`), `input.npy` and `ARCH.STAGE.npy`.
pub struct Reference {
    pub dir: PathBuf,
}

impl Reference {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The photo whose exact preprocessed tensor joins the random input (PNG: no decoder noise).
pub const PHOTO: &str = "chelsea.png";

fn generate(args: &[&str]) -> Reference {
    let dir = tempdir().keep();
    let photo_tensor = fixtures().join(format!("preprocess/{PHOTO}.r256c224.npy"));
    let mut all = vec!["--photo", photo_tensor.to_str().unwrap()];
    all.extend_from_slice(args);
    torchvision_reference(&dir, &all);
    Reference { dir }
}

/// ResNet-18 saved in torch's legacy (non-zip) format — the format of torchvision's own files.
pub fn resnet18() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| generate(&["--legacy", "resnet18"]))
}

/// ResNet-101 saved in torch's zip format.
pub fn resnet101() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| generate(&["resnet101"]))
}

/// ConvNeXt-T saved in torch's zip format (and safetensors).
pub fn convnext_tiny() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| generate(&["convnext_tiny"]))
}

/// EfficientNet-B0 saved in torch's zip format (and safetensors).
pub fn efficientnet_b0() -> &'static Reference {
    static R: OnceLock<Reference> = OnceLock::new();
    R.get_or_init(|| generate(&["efficientnet_b0"]))
}

/// Rewrites a safetensors file's JSON header with `edit`, keeping the data section.
pub fn edit_safetensors(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let bytes = std::fs::read(src).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut raw = serde_json::to_vec(&header).unwrap();
    while !raw.len().is_multiple_of(8) {
        raw.push(b' ');
    }
    let mut out = (raw.len() as u64).to_le_bytes().to_vec();
    out.extend(raw);
    out.extend(&bytes[8 + n..]);
    std::fs::write(dst, out).unwrap();
}
