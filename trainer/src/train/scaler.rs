//! Dynamic loss scaling for mixed-precision training.
//!
//! In f16, gradients smaller than about 6e-8 round to zero. The loss is multiplied by a large
//! scale before the backward pass so that the activation gradients flowing through the f16
//! convolutions stay representable, and the parameter gradients (f32, like the parameters)
//! are divided by the same scale before the optimiser sees them. A scale too large overflows
//! to infinity: that step is skipped and the scale halved; after a run of good steps it
//! doubles again. Same policy and defaults as PyTorch's `GradScaler`.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The scale a run starts with (2^16).
const INITIAL_SCALE: f64 = 65536.0;
/// Good steps in a row after which the scale doubles.
const GROWTH_INTERVAL: usize = 2000;

/// The scale and its history; saved with the checkpoint so a resumed run goes on with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Good steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped because their gradients overflowed, over the whole run.
    pub skipped_steps: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: INITIAL_SCALE,
            good_steps: 0,
            skipped_steps: 0,
        }
    }
}

impl LossScaler {
    /// The loss to differentiate: `loss` times the scale.
    pub fn scale<const D: usize>(&self, loss: Tensor<D>) -> Tensor<D> {
        loss.mul_scalar(self.scale)
    }

    /// `grads` (of a loss [`scale`](Self::scale)d by this scaler) at their true size; `None`
    /// when any of them overflowed (the step must be skipped; the scale has been halved).
    ///
    /// Deciding whether to step needs one value back from the device per step: the same wait
    /// PyTorch's `GradScaler.step` has. Replicas of a data-parallel run decide on the summed
    /// gradients, which are the same on every replica: they all skip the same steps.
    pub fn unscale<M: Module>(
        &mut self,
        mut grads: GradientsParams,
        model: &M,
    ) -> Option<GradientsParams> {
        let mut unscale = Unscale {
            grads: &mut grads,
            factor: 1.0 / self.scale,
            finite: Vec::new(),
        };
        model.visit(&mut unscale);
        let finite = unscale.finite;
        let all_finite = finite.is_empty() || Tensor::cat(finite, 0).all().into_scalar::<bool>();
        if all_finite {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
            Some(grads)
        } else {
            self.scale /= 2.0;
            self.good_steps = 0;
            self.skipped_steps += 1;
            None
        }
    }

    /// The gradients of `loss` for `model`'s trainable parameters, at their true size
    /// ([`scale`](Self::scale), backward, [`unscale`](Self::unscale)).
    #[cfg(test)]
    pub fn gradients<M: Module>(&mut self, loss: Tensor<1>, model: &M) -> Option<GradientsParams> {
        let grads = GradientsParams::from_grads(self.scale(loss).backward(), model);
        self.unscale(grads, model)
    }
}

/// Divides every gradient by the scale and notes, on the device, whether it is finite.
struct Unscale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
    finite: Vec<Tensor<1, Bool>>,
}

impl ModuleVisitor for Unscale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let grad = grad.mul_scalar(self.factor);
            self.finite.push(grad.clone().is_finite().all());
            self.grads.register(param.id, grad);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// A linear layer's gradients for a loss that is `factor` × its output sum.
    fn grads_of(scaler: &mut LossScaler, factor: f32) -> (Linear, Option<GradientsParams>) {
        let device = Device::flex().autodiff();
        device.seed(1);
        let layer = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::ones([4, 3], &device);
        let loss = layer.forward(x).sum().mul_scalar(factor);
        let grads = scaler.gradients(loss, &layer);
        (layer, grads)
    }

    #[test]
    fn gradients_come_back_at_their_true_size() {
        let mut scaler = LossScaler::default();
        let (layer, grads) = grads_of(&mut scaler, 0.5);
        let grads = grads.expect("finite gradients");
        // d(0.5 · Σ xW + b)/dW = 0.5 · Σ_rows x = 2 for every weight; /db = 0.5 · 4 rows.
        let w = grads.get::<2>(layer.weight.id).unwrap().into_data();
        let b = grads
            .get::<1>(layer.bias.as_ref().unwrap().id)
            .unwrap()
            .into_data();
        assert_eq!(w.try_to_vec::<f32>().unwrap(), vec![2.0; 6]);
        assert_eq!(b.try_to_vec::<f32>().unwrap(), vec![2.0; 2]);
        assert_eq!(scaler.good_steps, 1);
        assert_eq!(scaler.scale, INITIAL_SCALE);
    }

    #[test]
    fn an_overflow_skips_the_step_and_halves_the_scale() {
        let mut scaler = LossScaler::default();
        // 1e35 × 65536 overflows f32: the gradients are infinite.
        let (_, grads) = grads_of(&mut scaler, 1e35);
        assert!(grads.is_none());
        assert_eq!(scaler.scale, INITIAL_SCALE / 2.0);
        assert_eq!(scaler.skipped_steps, 1);
    }

    #[test]
    fn the_scale_grows_after_a_run_of_good_steps() {
        let mut scaler = LossScaler {
            good_steps: GROWTH_INTERVAL - 1,
            ..LossScaler::default()
        };
        assert!(grads_of(&mut scaler, 1.0).1.is_some());
        assert_eq!(scaler.scale, INITIAL_SCALE * 2.0);
        assert_eq!(scaler.good_steps, 0);
    }
}
