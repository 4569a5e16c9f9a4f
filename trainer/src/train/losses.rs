//! The training losses of an epoch, read back from the device in batches of steps.

use super::checkpoint::State;
use anyhow::Result;
use burn::prelude::*;

/// Steps whose losses stay on the device before one read brings them all back.
pub const READ_LOSS_EVERY: usize = 16;

/// Training losses not read yet. Reading a value back waits for the device to finish every
/// queued kernel, so reading each step's loss would leave the GPU idle while the next step is
/// queued; the losses stay on the device and come back in one transfer every
/// [`READ_LOSS_EVERY`] steps (and before the state is saved or reported).
#[derive(Default)]
pub struct PendingLosses(Vec<(Tensor<1>, usize, usize)>);

impl PendingLosses {
    /// The mean loss of step `step` (1-based) over `n` images (`[1]`, detached from the
    /// graph): a batch, or one replica's shard of it.
    pub fn push(&mut self, loss: Tensor<1>, n: usize, step: usize) {
        self.0.push((loss, n, step));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds the pending losses to the epoch's running sums, in step order: the same sums, bit
    /// for bit, as adding each step's loss as soon as it was known, so a resumed run still
    /// reproduces an uninterrupted one. A loss that is not finite is left out of the sums (in
    /// f16 the scaler skipped that step); the first such step is returned, with its loss.
    pub fn add_to(&mut self, state: &mut State) -> Result<Option<(usize, f32)>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.0);
        // One transfer from the first loss's device (the others' losses come to it).
        let device = pending[0].0.device();
        let losses = pending
            .iter()
            .map(|(loss, ..)| match loss.device() == device {
                true => loss.clone(),
                false => loss.clone().to_device(&device),
            })
            .collect();
        let values = Tensor::cat(losses, 0)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read the training losses: {e:?}"))?;
        let mut first_bad = None;
        for (value, (_, n, step)) in values.into_iter().zip(pending) {
            if !value.is_finite() {
                first_bad = first_bad.or(Some((step, value)));
                continue;
            }
            state.partial_loss += f64::from(value) * n as f64;
            state.partial_seen += n;
        }
        Ok(first_bad)
    }
}
