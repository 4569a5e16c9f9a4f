//! One optimisation step: forward, loss, backward, gradients (summed across replicas, unscaled
//! and checked in f16), optimiser update. The training loop calls it once per batch on one
//! device, each replica of a data-parallel run once per shard (`parallel`), and the training
//! benchmark times it: there is no other copy of it.

use super::scaler::LossScaler;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use petal_shared::Network;

/// What a step updates besides the network: the optimiser's state and, in f16, the loss scale.
#[derive(Clone)]
pub struct Optimization {
    pub optimizer: ModuleOptimizer,
    /// `Some` in f16 mixed precision: its gradients need the loss scaled up (see `scaler`).
    pub scaler: Option<LossScaler>,
}

/// One step's images and labels on the step's device, and their share of the global batch.
pub struct Shard {
    /// `[N, 3, S, S]`, normalised.
    pub images: Tensor<4>,
    /// `[N]`, class indices.
    pub labels: Tensor<1, Int>,
    /// This shard's images over the global batch's: 1 on one device. The gradient of the
    /// shard's mean loss times this share, summed over the shards, is the gradient of the
    /// global batch's mean loss, whether or not the shards are of equal size.
    pub share: f64,
}

/// How a replica's gradients meet the others'.
pub trait GradientSum {
    /// The sum over every replica of the gradients each computed for its shard (`grads` are
    /// this replica's). Every replica gets the same values, so that their networks stay equal.
    fn sum(&self, grads: GradientsParams, model: &Network) -> GradientsParams;
}

/// One device, or replicas whose parameters are marked for burn's collective all-reduce
/// (NCCL on CUDA), which sums the gradients inside `backward` itself.
pub struct Alone;

impl GradientSum for Alone {
    fn sum(&self, grads: GradientsParams, _: &Network) -> GradientsParams {
        grads
    }
}

/// One training step of `model` on `shard` at learning rate `lr`; returns the updated network
/// and the shard's mean loss (`[1]`, detached, still on the device: reading it would wait for
/// the step to finish). In f16 a step whose gradients overflowed changes nothing but the scale.
pub fn train_step(
    model: Network,
    shard: Shard,
    lr: f64,
    loss_fn: &CrossEntropyLoss,
    optimization: &mut Optimization,
    replicas: &dyn GradientSum,
) -> (Network, Tensor<1>) {
    let loss = loss_fn.forward(model.forward(shard.images), shard.labels);
    let mut objective = loss.clone();
    // Multiplying by 1 is exact, but costs a kernel per step on one device.
    if shard.share != 1.0 {
        objective = objective.mul_scalar(shard.share);
    }
    if let Some(scaler) = &optimization.scaler {
        objective = scaler.scale(objective);
    }
    let grads = GradientsParams::from_grads(objective.backward(), &model);
    let grads = replicas.sum(grads, &model);
    let grads = match optimization.scaler.as_mut() {
        None => Some(grads),
        Some(scaler) => scaler.unscale(grads, &model),
    };
    let model = match grads {
        Some(grads) => optimization.optimizer.step(lr, model, grads),
        // Overflowed f16 gradients: this step changes nothing.
        None => model,
    };
    (model, loss.detach())
}
