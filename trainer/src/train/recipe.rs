//! The training recipe: global settings plus an ordered list of stages, read from TOML.
//! `recipe.toml` beside this crate is the built-in default (the project's original recipe).

use crate::backend::PrecisionChoice;
use crate::data::split::Holdout;
use anyhow::{Context, Result, bail};
use petal_shared::{Arch, ParamGroup};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The built-in recipe, as a user would copy it.
pub const DEFAULT_RECIPE: &str = include_str!("../../recipe.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub arch: Arch,
    pub batch_size: usize,
    pub seed: u64,
    pub image_size: usize,
    pub resize: usize,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub log_every: usize,
    /// Number format of the run (`auto`, `f32` or `f16`); a run folder's copy holds the one
    /// the run resolved to.
    #[serde(default)]
    pub precision: PrecisionChoice,
    /// Training images get the recipe's augmentation (rotation, random-resized crop, flip);
    /// `false` feeds them through evaluation's resize and center crop, as a PyTorch run
    /// without augmentation does.
    #[serde(default = "yes")]
    pub augment: bool,
    /// Each epoch visits the training images in a seeded random order; `false` keeps the
    /// data folder's order (classes, then files, sorted) every epoch, as `shuffle=False` does.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// With pretrained weights: start from the file's own classifier (it must have one output
    /// per class) instead of a fresh one, as when continuing a PyTorch fine-tune.
    #[serde(default)]
    pub keep_head: bool,
    /// Stochastic depth while training, for the families that have it (torchvision's: 0.1 at
    /// ConvNeXt's last block, 0.2 in total for EfficientNet; drawn from each step's seed); `false` turns it off, as `stochastic_depth_prob=0` does. Only
    /// without it can a PyTorch run be reproduced step for step: the two draw differently.
    #[serde(default = "yes")]
    pub stochastic_depth: bool,
    pub stages: Vec<Stage>,
}

fn yes() -> bool {
    true
}

/// Which parameters a stage trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trainable {
    /// Only the new classifier (the family's head: ResNet's `fc`, ConvNeXt's `classifier`, …);
    /// the backbone is frozen, BatchNorm statistics included.
    Head,
    /// Everything except the stem (ResNet's `conv1` + `bn1`, ConvNeXt's patchify layer, …).
    AllButStem,
    /// Every layer.
    All,
}

impl Trainable {
    /// The network's parameter groups this trains.
    pub fn groups(self) -> &'static [ParamGroup] {
        match self {
            Trainable::Head => &[ParamGroup::Head],
            Trainable::AllButStem => &[ParamGroup::Body, ParamGroup::Head],
            Trainable::All => &[ParamGroup::Stem, ParamGroup::Body, ParamGroup::Head],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with torch's defaults (betas 0.9/0.999, epsilon 1e-8).
    Adam,
    /// SGD with momentum and torch's dampening default (0).
    Sgd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    pub trainable: Trainable,
    pub optimizer: OptimizerKind,
    pub epochs: usize,
    /// Starting learning rate; `None` continues the previous stage's schedule and optimiser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_step_epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_gamma: Option<f64>,
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD only.
    #[serde(default)]
    pub momentum: f64,
}

impl Default for Recipe {
    fn default() -> Self {
        Self::from_toml(DEFAULT_RECIPE, "the built-in recipe").expect("the built-in recipe parses")
    }
}

impl Recipe {
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let recipe: Recipe =
            toml::from_str(text).with_context(|| format!("{origin} is not a valid recipe"))?;
        recipe
            .validate()
            .with_context(|| format!("{origin} is not a valid recipe"))?;
        Ok(recipe)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// How a folder without `train/` sub-folders is split.
    pub fn holdout(&self) -> Holdout {
        Holdout {
            val: self.val_fraction,
            test: self.test_fraction,
            seed: self.seed,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size < 2 {
            bail!("batch_size must be at least 2 (BatchNorm needs two values per channel)");
        }
        if self.image_size < 32 || self.resize < self.image_size {
            bail!(
                "image_size must be at least 32 and resize at least image_size (got {} and {})",
                self.image_size,
                self.resize
            );
        }
        let fractions = self.val_fraction + self.test_fraction;
        if !(0.0..1.0).contains(&self.val_fraction)
            || !(0.0..1.0).contains(&self.test_fraction)
            || fractions >= 1.0
        {
            bail!("val_fraction and test_fraction must be in [0, 1) and sum to less than 1");
        }
        if self.stages.iter().all(|s| s.epochs == 0) {
            bail!("no stage has any epochs");
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let what = format!("stage '{}'", stage.name);
            match stage.lr {
                Some(lr) if !(lr > 0.0 && lr.is_finite()) => {
                    bail!("{what}: lr must be positive, got {lr}")
                }
                Some(_) => {}
                None => {
                    let Some(prev) = i.checked_sub(1).map(|p| &self.stages[p]) else {
                        bail!("{what}: the first stage needs an lr");
                    };
                    if prev.optimizer != stage.optimizer {
                        bail!(
                            "{what}: set an lr: it cannot continue a {:?} schedule with {:?}",
                            prev.optimizer,
                            stage.optimizer
                        );
                    }
                    if stage.lr_step_epochs.is_some() || stage.lr_gamma.is_some() {
                        bail!("{what}: lr_step_epochs and lr_gamma belong to a stage that sets lr");
                    }
                }
            }
            if stage.lr_gamma.is_some_and(|g| !(g > 0.0 && g <= 1.0)) {
                bail!("{what}: lr_gamma must be in (0, 1]");
            }
            if stage.optimizer == OptimizerKind::Adam && stage.momentum != 0.0 {
                bail!("{what}: momentum is an SGD setting");
            }
            if !(0.0..1.0).contains(&stage.momentum) || stage.weight_decay < 0.0 {
                bail!("{what}: momentum must be in [0, 1) and weight_decay non-negative");
            }
        }
        let mut names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("two stages are named '{}'", w[0]);
        }
        Ok(())
    }

    /// The recipe for a network without pretrained weights: no frozen-backbone stage; every
    /// layer trains from the first epoch. A stage that continued a dropped stage's schedule
    /// gets that schedule written out.
    pub fn from_scratch(mut self) -> Self {
        let resolved: Vec<Schedule> = (0..self.stages.len()).map(|i| self.schedule(i)).collect();
        let mut stages = Vec::new();
        let mut dropped_before = false;
        for (stage, sched) in self.stages.into_iter().zip(resolved) {
            if stage.trainable == Trainable::Head {
                dropped_before = true;
                continue;
            }
            let mut stage = Stage {
                trainable: Trainable::All,
                ..stage
            };
            if dropped_before && stage.lr.is_none() {
                stage.lr = Some(sched.lr);
                stage.lr_step_epochs = Some(sched.step_epochs);
                stage.lr_gamma = Some(sched.gamma);
            }
            dropped_before = false;
            stages.push(stage);
        }
        self.stages = stages;
        self
    }

    /// Index of the stage that a run's length (`--epochs`) sets: the first one that trains more
    /// than the head.
    pub fn main_stage(&self) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.trainable != Trainable::Head)
    }

    /// The schedule stage `i` follows, resolved through the stages it continues.
    pub fn schedule(&self, i: usize) -> Schedule {
        let mut origin = i;
        let mut offset = 0;
        while self.stages[origin].lr.is_none() && origin > 0 {
            origin -= 1;
            offset += self.stages[origin].epochs;
        }
        let o = &self.stages[origin];
        Schedule {
            lr: o.lr.unwrap_or(1e-3),
            step_epochs: o.lr_step_epochs.unwrap_or(0),
            gamma: o.lr_gamma.unwrap_or(1.0),
            epoch_offset: offset,
            continues: origin != i,
        }
    }
}

/// A step schedule: `lr * gamma^(e / step_epochs)` at schedule epoch `e` (0-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    /// 0 keeps the rate constant.
    pub step_epochs: usize,
    pub gamma: f64,
    /// Epochs the schedule ran in earlier stages before this one.
    pub epoch_offset: usize,
    /// Whether the stage carries on the previous stage's schedule and optimiser.
    pub continues: bool,
}

impl Schedule {
    /// The rate for the stage's `epoch`-th epoch (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let e = self.epoch_offset + epoch;
        match self.step_epochs {
            0 => self.lr,
            s => self.lr * self.gamma.powi((e / s) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_recipe_is_the_original_one() {
        let r = Recipe::default();
        assert_eq!(r.arch, Arch::ResNet101);
        let names: Vec<_> = r.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["head", "finetune", "polish"]);
        assert_eq!(r.stages.iter().map(|s| s.epochs).sum::<usize>(), 30);
        // Adam 1e-3 halved every 2 epochs, continuing from the head stage into fine-tuning.
        let head = r.schedule(0);
        assert_eq!(
            (0..4).map(|e| head.lr_at(e)).collect::<Vec<_>>(),
            [1e-3, 1e-3, 5e-4, 5e-4]
        );
        let finetune = r.schedule(1);
        assert!(finetune.continues);
        assert_eq!(finetune.lr_at(0), 2.5e-4);
        assert_eq!(finetune.lr_at(2), 1.25e-4);
        // Momentum SGD polish at a fixed 1e-8.
        let polish = r.schedule(2);
        assert!(!polish.continues);
        assert_eq!((polish.lr_at(0), polish.lr_at(1)), (1e-8, 1e-8));
        assert_eq!(r.stages[2].momentum, 0.8);
        assert_eq!(r.stages[1].trainable, Trainable::AllButStem);
    }

    #[test]
    fn recipe_round_trips_through_toml() {
        let r = Recipe::default();
        assert_eq!(Recipe::from_toml(&r.to_toml(), "x").unwrap(), r);
    }

    #[test]
    fn from_scratch_trains_everything_and_keeps_the_schedule() {
        let r = Recipe::default().from_scratch();
        let names: Vec<_> = r.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["finetune", "polish"]);
        assert!(r.stages.iter().all(|s| s.trainable == Trainable::All));
        // The fine-tune stage no longer continues anything: it starts the schedule itself.
        let s = r.schedule(0);
        assert!(!s.continues);
        assert_eq!((s.lr_at(0), s.lr_at(2)), (1e-3, 5e-4));
        assert_eq!(r.main_stage(), Some(0));
    }

    #[test]
    fn bad_recipes_say_what_is_wrong() {
        let err = |edit: &dyn Fn(&mut Recipe)| {
            let mut r = Recipe::default();
            edit(&mut r);
            format!("{:#}", r.validate().unwrap_err())
        };
        assert!(err(&|r| r.stages[0].lr = None).contains("first stage needs an lr"));
        assert!(err(&|r| r.stages[2].lr = None).contains("cannot continue"));
        assert!(err(&|r| r.batch_size = 1).contains("batch_size"));
        assert!(err(&|r| r.stages[1].name = "head".into()).contains("two stages are named"));
        let unknown = Recipe::from_toml("arch = \"resnet18\"\nbatch = 3", "my.toml").unwrap_err();
        assert!(format!("{unknown:#}").contains("my.toml"), "{unknown:#}");
    }
}
