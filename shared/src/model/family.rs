//! What Petal knows about each network family besides its module, in one table the rest of the
//! code reads: [`FAMILIES`]. Each family's module defines its [`FamilyInfo`]; adding a family
//! is its module, its `Arch` entries, its line in [`FAMILIES`] and its line in `Network`'s
//! `families!`.

use super::keys::KeyRule;
use super::{Arch, Family, Network};
use burn::prelude::*;

/// A family's entry in [`FAMILIES`].
pub struct FamilyInfo {
    /// How the family is called in messages (`ResNet`).
    pub name: &'static str,
    /// The networks of this family Petal builds.
    pub archs: &'static [Arch],
    /// A freshly initialised network of `arch` (torchvision's init) with `num_classes`
    /// outputs.
    pub init: fn(arch: Arch, num_classes: usize, device: &Device) -> Network,
    /// The mapping between torchvision's `state_dict` keys and our parameter paths, read in
    /// both directions (see [`KeyRule`]).
    pub torchvision_keys: fn() -> Vec<KeyRule>,
    /// Our path of the last linear layer (`fc`): what a new head replaces.
    pub head: &'static str,
    /// What a set of torchvision keys holds, if they are this family's.
    pub detect: fn(keys: &[&str]) -> Option<Detected>,
    /// The shorter side torchvision's eval transform resizes to for its ImageNet weights of
    /// `arch`, before the 224 center crop.
    pub imagenet_resize: fn(arch: Arch) -> usize,
    /// torchvision's published ImageNet weights of this family.
    pub published: &'static [Published],
}

impl FamilyInfo {
    /// The network of this family whose shape `fits` accepts, or the description of the one a
    /// file holds that Petal does not build.
    pub(crate) fn detected(
        &self,
        fits: impl Fn(Family) -> bool,
        description: impl FnOnce() -> String,
    ) -> Detected {
        match self.archs.iter().find(|a| fits(a.family())) {
            Some(&arch) => Detected::Arch(arch),
            None => Detected::Other(description()),
        }
    }
}

/// A pass's activations by the names torchvision's reference files use: the stem's output,
/// `{prefix}1`, `{prefix}2`, … for `stages`, then `tail` (pooled features, logits).
pub(crate) fn named_activations(
    stem: (&str, Tensor<4>),
    prefix: &str,
    stages: impl IntoIterator<Item = Tensor<4>>,
    tail: impl IntoIterator<Item = (&'static str, TensorData)>,
) -> Vec<(String, TensorData)> {
    std::iter::once((stem.0.to_string(), stem.1.into_data()))
        .chain(
            stages
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("{prefix}{}", i + 1), t.into_data())),
        )
        .chain(
            tail.into_iter()
                .map(|(name, data)| (name.to_string(), data)),
        )
        .collect()
}

/// What a weight file's keys describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// One of the networks Petal builds.
    Arch(Arch),
    /// A network of the family that Petal does not build, described for an error message.
    Other(String),
}

/// One of torchvision's published weight files. Its name carries the first 8 hex digits of its
/// SHA-256 (`resnet101-63fe2227.pth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub arch: Arch,
    pub generation: Generation,
    pub file: &'static str,
}

/// torchvision's generations of ImageNet weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generation {
    /// `IMAGENET1K_V1`: the original training recipes.
    V1,
    /// `IMAGENET1K_V2`: torchvision's newer recipe (ResNet-50/101/152), evaluated at resize 232.
    V2,
}

/// Every family Petal builds.
pub const FAMILIES: [&FamilyInfo; 3] = [
    &super::resnet::FAMILY,
    &super::convnext::FAMILY,
    &super::efficientnet::FAMILY,
];

impl Arch {
    /// This network's family entry.
    pub fn family_info(self) -> &'static FamilyInfo {
        FAMILIES
            .into_iter()
            .find(|f| f.archs.contains(&self))
            .expect("every Arch belongs to a registered family")
    }

    /// The shorter side torchvision's eval transform resizes to for its ImageNet weights of
    /// this network (`IMAGENET1K_V1`), before the 224 center crop.
    pub fn imagenet_resize(self) -> usize {
        (self.family_info().imagenet_resize)(self)
    }
}

/// What `keys` (a torchvision `state_dict`'s) hold, by the first family that recognises them.
pub fn detect(keys: &[&str]) -> Option<Detected> {
    FAMILIES.into_iter().find_map(|f| (f.detect)(keys))
}

/// Every published weight file, of every family.
pub fn published() -> impl Iterator<Item = &'static Published> {
    FAMILIES.into_iter().flat_map(|f| f.published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arch_has_exactly_one_family() {
        for arch in Arch::ALL {
            let owners = FAMILIES.iter().filter(|f| f.archs.contains(&arch)).count();
            assert_eq!(owners, 1, "{arch}");
        }
        let listed: usize = FAMILIES.iter().map(|f| f.archs.len()).sum();
        assert_eq!(listed, Arch::ALL.len());
    }

    #[test]
    fn published_files_name_their_network_and_hash() {
        for p in published() {
            assert!(p.file.starts_with(p.arch.name()), "{p:?}");
            assert_eq!(
                p.arch.family_info().published.iter().find(|q| *q == p),
                Some(p)
            );
            let hash = p
                .file
                .rsplit_once('-')
                .map(|(_, h)| h.trim_end_matches(".pth"));
            assert!(
                hash.is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit())),
                "{p:?}"
            );
        }
    }
}
