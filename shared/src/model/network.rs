//! The one network type the rest of Petal talks to: any [`Arch`], behind one interface.
//!
//! The trainer, bundles, import, export, `explain` and the page hold a [`Network`] and never
//! name a family. Every family's module has the methods [`Network`] forwards to (`forward`,
//! `maps`, `with_trainable`, `with_precision`, …); the family's own folder says what each
//! means for it, and its [`FamilyInfo`](super::FamilyInfo) the rest.

use super::{Arch, ConvNeXt, EfficientNet, Precision, ResNet};
use burn::prelude::*;
use burn::store::{ApplyResult, ModuleSnapshot, ModuleStore};

/// Builds a [`Network`]: which one, and the size of its classification head.
#[derive(Config, Debug)]
pub struct NetworkConfig {
    pub arch: Arch,
    /// Outputs of the head (1000 for ImageNet weights; the user's class count after
    /// fine-tuning).
    pub num_classes: usize,
}

impl NetworkConfig {
    /// A freshly initialised network (torchvision's init for its family).
    pub fn init(&self, device: &Device) -> Network {
        (self.arch.family_info().init)(self.arch, self.num_classes, device)
    }
}

/// Declares [`Network`] with one variant per family, the `each!` dispatch over them and the
/// conversions from each family's module: registering a family is its line here.
/// (`$d` is a literal `$`, for the inner macro's own variables.)
macro_rules! families {
    ($d:tt $($variant:ident($module:ty)),+ $(,)?) => {
        /// A classification network of any family.
        // The variants differ in size (EfficientNet's seven stage vectors are held inline): a
        // program holds one or two networks and moves them rarely, and burn has no `Module`
        // for `Box` to put a variant behind.
        #[allow(clippy::large_enum_variant)]
        #[derive(Module, Debug)]
        pub enum Network {
            $($variant($module)),+
        }

        /// Calls `$body` with `$m` bound to the variant's module; `=> wrap` rebuilds a
        /// `Network` of the same variant from the body's result.
        macro_rules! each {
            ($d self_:expr, $d m:ident => wrap $d body:expr) => {
                match $d self_ {
                    $(Network::$variant($d m) => Network::$variant($d body)),+
                }
            };
            ($d self_:expr, $d m:ident => $d body:expr) => {
                match $d self_ {
                    $(Network::$variant($d m) => $d body),+
                }
            };
        }

        $(impl From<$module> for Network {
            fn from(m: $module) -> Self {
                Network::$variant(m)
            }
        })+
    };
}

families! {
    $
    ResNet(ResNet),
    ConvNeXt(ConvNeXt),
    EfficientNet(EfficientNet),
}

/// The named parameter groups a training stage refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamGroup {
    /// The first layer(s) that see pixels: ResNet's `conv1` + `bn1`, ConvNeXt's patchify
    /// convolution and its LayerNorm, EfficientNet's `features.0` (convolution + BatchNorm).
    Stem,
    /// Every stage between stem and head (EfficientNet: `features.1..=8`, its 1×1
    /// convolution to 1280 channels included).
    Body,
    /// The classifier: ResNet's `fc`; ConvNeXt's LayerNorm + linear layer; EfficientNet's
    /// `classifier` (dropout + linear layer).
    Head,
}

/// What a network shows of its reasons for a batch `[N, 3, H, W]`, from one pass (see
/// [`crate::cam`]): the last stage's grid is `h × w` (`H/32 × W/32`).
pub struct Maps {
    /// `[N, classes]`
    pub logits: Tensor<2>,
    /// Class activation maps, `[N, h, w, classes]`: the head evaluated at every position;
    /// each map's mean is its logit.
    pub cam: Tensor<4>,
    /// Grad-CAM maps (Selvaraju et al. 2017), `[N, h, w, classes]`: the last stage's channels
    /// weighted by the mean over the grid of the logit's gradient with respect to them,
    /// summed, and clipped at zero. The gradients are the head's, in closed form.
    pub grad_cam: Tensor<4>,
}

impl Network {
    /// Classification logits.
    ///
    /// - `images`: `[N, 3, H, W]`, normalised (224 for ImageNet weights)
    /// - returns: `[N, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        each!(self, m => m.forward(images))
    }

    /// The features the head's linear layer reads: `[N, 3, H, W]` → `[N, feature_dim]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        each!(self, m => m.features(images))
    }

    /// The last stage's output, what the head reads: `[N, 3, H, W]` →
    /// `[N, feature_dim, H/32, W/32]`. `head(last_stage(x))` is `forward(x)`.
    pub fn last_stage(&self, images: Tensor<4>) -> Tensor<4> {
        each!(self, m => m.last_stage(images))
    }

    /// The head on the last stage's output (pooling, ConvNeXt's LayerNorm, EfficientNet's
    /// dropout in training, the linear layer):
    /// `[N, feature_dim, h, w]` → `[N, num_classes]`.
    pub fn head(&self, last: Tensor<4>) -> Tensor<2> {
        each!(self, m => m.head(last))
    }

    /// Logits and class activation maps (see [`crate::cam`]): each map's mean over positions
    /// is its class's logit.
    ///
    /// - `images`: `[N, 3, H, W]`
    /// - returns: `([N, classes], [N, H/32, W/32, classes])`
    pub fn class_maps(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<4>) {
        each!(self, m => m.class_maps(images))
    }

    /// Logits, class activation maps and Grad-CAM maps of every class from one pass (see
    /// [`Maps`]).
    pub fn maps(&self, images: Tensor<4>) -> Maps {
        each!(self, m => m.maps(images))
    }

    pub fn arch(&self) -> Arch {
        each!(self, m => m.arch())
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        each!(self, m => m.num_classes())
    }

    /// Replaces the head's last layer with a freshly initialised one for `num_classes`
    /// outputs (fine-tuning on new classes).
    pub fn with_new_head(self, num_classes: usize) -> Self {
        each!(self, m => wrap m.with_new_head(num_classes))
    }

    /// The same network computing in `precision`; the weights stay f32.
    pub fn with_precision(self, precision: Precision) -> Self {
        each!(self, m => wrap m.with_precision(precision))
    }

    /// Folds pending BatchNorm running-statistics updates into their stored values (see
    /// [`ResNet::sync_running_stats`]); families without BatchNorm have none.
    pub fn sync_running_stats(&self) {
        each!(self, m => m.sync_running_stats())
    }

    /// The network without stochastic depth: blocks keep every residual branch in training too
    /// (torchvision's `stochastic_depth_prob=0`); families without it are unchanged.
    pub fn without_stochastic_depth(self) -> Self {
        each!(self, m => wrap m.without_stochastic_depth())
    }

    /// The network with only `groups` trainable: the other groups are frozen, which also stops
    /// their BatchNorm statistics and stochastic depth (they behave as in evaluation).
    pub fn with_trainable(self, groups: &[ParamGroup]) -> Self {
        let trains = |g| groups.contains(&g);
        each!(self.unfreeze(), m => wrap m.with_trainable(trains))
    }

    /// Every stage's output of one pass in evaluation, by the names torchvision's reference
    /// files use (`ARCH.NAME.npy`), for parity tests and feature extraction.
    pub fn activations(&self, images: Tensor<4>) -> Vec<(String, TensorData)> {
        each!(self, m => m.activations(images))
    }

    /// Writes the weights into `store` under the family module's own paths (`conv1.weight`,
    /// not `ResNet.conv1.weight`): bundle and checkpoint files name tensors as the family's
    /// module does.
    pub fn save_tensors<S: ModuleStore>(&self, store: &mut S) -> Result<(), S::Error> {
        each!(self, m => m.save_into(store))
    }

    /// Reads weights written by [`save_tensors`](Self::save_tensors) (or any file with the
    /// family module's paths) into this network.
    pub fn load_tensors<S: ModuleStore>(&mut self, store: &mut S) -> Result<ApplyResult, S::Error> {
        each!(self, m => m.load_from(store))
    }
}
