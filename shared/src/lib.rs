//! Petal's shared core: the one model definition and the one preprocessing.
//!
//! Everything here compiles for native targets and for `wasm32-unknown-unknown`, and runs on
//! every burn backend Petal uses (the backend is chosen by the [`burn::tensor::Device`]):
//!
//! - [`preprocess`]: bytes → 8-bit RGB → Pillow-exact resize → center crop → normalised CHW
//!   `f32`, bit-identical to torchvision's eval transform on the same decoded pixels.
//! - [`model`]: the [`Network`] seam over torchvision's ResNet-18/34/50/101/152, ConvNeXt-T and
//!   EfficientNet-B0, one folder per family, with per-stage activations.
//! - [`bundle`]: the self-describing model bundle (`petal.json` + burnpack weights).
//! - [`runtime`]: the one way a network runs for answers (logits, top-k, class maps), on the
//!   CPU's folded form or burn's module on any device; the CLI, training's validation and
//!   the page use it.
//! - [`classify`]: softmax, the predicted class and top-k, shared by the CLI and the web page.
//! - [`cam`]: class activation maps and Grad-CAM mapped back onto the photo (`petal explain`,
//!   the page).
//! - [`files`] and [`score_csv`]: which files a folder search takes, their names and order,
//!   and the score CSV — the same rules in `petal score` and the page.
//! - `import` (feature `import`, native only): torchvision `state_dict` files → [`Network`].

pub mod bundle;
pub mod cam;
pub mod classify;
pub mod files;
#[cfg(feature = "fs")]
pub mod fs;
pub mod imagenet;
#[cfg(feature = "import")]
pub mod import;
pub mod model;
pub mod preprocess;
pub mod runtime;
pub mod score_csv;

pub use bundle::{Bundle, BundleError, BundleMeta};
pub use model::{Arch, BatchNorm, BatchNormConfig, Network, NetworkConfig, ParamGroup, Precision};
pub use preprocess::{PreprocessError, Preprocessor};
