//! Data-parallel training: one replica of the network per device, each stepped by its own
//! thread on its own shard of every batch, their gradients summed before each replica's
//! optimiser takes the same step — so the replicas stay equal, and the step is the one-device
//! step on the whole batch (for networks that treat each image on its own; BatchNorm
//! normalises each shard by its own statistics, as PyTorch's DistributedDataParallel does).
//!
//! How gradients are summed depends on the devices:
//! - several CUDA GPUs: burn's collective all-reduce over NCCL, inside `backward`, for every
//!   parameter marked distributed (marked again after every change of what trains, since
//!   changing a parameter's `require_grad` drops the mark);
//! - replicas on the CPU: through host memory, by the replicas' threads (burn has no collective
//!   on its CPU backend). No faster than one device: it exists to run the data-parallel path
//!   where there is no GPU, as the tests do. Replicas on one device share its random
//!   generator, so a run there that draws on the device (ConvNeXt's stochastic depth) is not
//!   repeatable.
//!
//! The leader (replica 0) is what the loop validates, checkpoints and exports. At the end of
//! every epoch the others take the leader's network, BatchNorm statistics included.

use super::step::{Alone, GradientSum, Optimization, Shard, train_step};
pub use crate::backend::Placement;
use crate::data::batches::Batch;
use anyhow::{Context, Result, bail};
#[cfg(feature = "cuda")]
use burn::module::ModuleMapper;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use petal_shared::Network;
use std::sync::mpsc;
use std::sync::{Barrier, Mutex};

/// The replicas of a run, on their (autodiff) devices.
pub struct Replicas {
    devices: Vec<Device>,
    /// `None` only while an epoch has them on its threads.
    models: Vec<Option<Network>>,
    optimizations: Vec<Optimization>,
    sum: Summing,
}

/// How this run's replicas sum their gradients.
enum Summing {
    /// One device: nothing to sum.
    Alone,
    /// burn's collective all-reduce (NCCL), which lives as long as this context.
    #[cfg(feature = "cuda")]
    Collective(#[allow(dead_code)] burn::tensor::distributed::DistributedContext),
    /// Through host memory.
    Host(HostSum),
}

/// One shard's mean loss (`[1]`, on its replica's device) and its number of images.
pub type ShardLoss = (Tensor<1>, usize);

impl Replicas {
    /// `model` (on `devices[0]`, autodiff) replicated on every device, with `optimization` for
    /// each. `collective`: the devices are CUDA GPUs, which sum through NCCL; others sum
    /// through host memory.
    pub fn new(
        model: Network,
        optimization: Optimization,
        devices: Vec<Device>,
        collective: bool,
    ) -> Result<Self> {
        if devices.is_empty() {
            bail!("data-parallel training needs at least one device");
        }
        let n = devices.len();
        let sum = match n {
            1 => Summing::Alone,
            _ if collective => nccl(&devices)?,
            _ => Summing::Host(HostSum::new(n)),
        };
        let mut replicas = Replicas {
            models: vec![None; n],
            optimizations: vec![optimization; n],
            devices,
            sum,
        };
        replicas.models[0] = Some(model);
        replicas.follow_the_leader();
        Ok(replicas)
    }

    fn len(&self) -> usize {
        self.devices.len()
    }

    /// The leader's network.
    pub fn model(&self) -> &Network {
        self.models[0]
            .as_ref()
            .expect("the replicas are back from their epoch")
    }

    /// The leader's optimiser and loss scale.
    pub fn optimization(&self) -> &Optimization {
        &self.optimizations[0]
    }

    /// Changes every replica's network with `change` (what trains, above all), and marks its
    /// trainable parameters for the all-reduce again.
    pub fn map_models(&mut self, change: impl Fn(Network) -> Network) {
        for replica in &mut self.models {
            let model = change(
                replica
                    .take()
                    .expect("the replicas are back from their epoch"),
            );
            *replica = Some(self.sum.mark(model));
        }
    }

    /// Gives every replica a copy of `optimizer` (a fresh one, or one read from a checkpoint):
    /// their states stay equal because they all take the same steps.
    pub fn set_optimizer(&mut self, optimizer: ModuleOptimizer) {
        for o in &mut self.optimizations {
            o.optimizer = optimizer.clone();
        }
    }

    /// Runs one epoch's steps: `body` hands its batches to the [`Stepper`] in order. Each
    /// replica runs on its own thread meanwhile (one device: on this one). At the end, the
    /// leader's BatchNorm statistics are made current and the others take its network.
    pub fn epoch<T>(&mut self, lr: f64, body: impl FnOnce(&mut Stepper) -> Result<T>) -> Result<T> {
        let result = if self.len() == 1 {
            let loss_fn = Box::new(CrossEntropyLossConfig::new().init(&self.devices[0]));
            let mut stepper = Stepper {
                lr,
                ranks: Ranks::Here {
                    replicas: self,
                    loss_fn,
                },
            };
            body(&mut stepper)
        } else {
            self.epoch_on_threads(lr, body)
        };
        if let (1, Some(leader)) = (self.len(), &self.models[0]) {
            // Stepped on this thread: its statistics' updates merge here.
            leader.sync_running_stats();
        }
        self.follow_the_leader();
        result
    }

    fn epoch_on_threads<T>(
        &mut self,
        lr: f64,
        body: impl FnOnce(&mut Stepper) -> Result<T>,
    ) -> Result<T> {
        let n = self.len();
        let sum = &self.sum;
        std::thread::scope(|scope| {
            let mut jobs = Vec::with_capacity(n);
            let mut results = Vec::with_capacity(n);
            let mut handles = Vec::with_capacity(n);
            for rank in 0..n {
                let (job_tx, job_rx) = mpsc::channel::<Job>();
                let (loss_tx, loss_rx) = mpsc::channel::<ShardLoss>();
                jobs.push(job_tx);
                results.push(loss_rx);
                let device = self.devices[rank].clone();
                let mut model = self.models[rank].take();
                let mut optimization = self.optimizations[rank].clone();
                handles.push(scope.spawn(move || {
                    let loss_fn = CrossEntropyLossConfig::new().init(&device);
                    let summing: Box<dyn GradientSum + '_> = sum.for_rank(rank, &device);
                    for job in job_rx {
                        let current = model.take().expect("a replica keeps its network");
                        let (next, loss) =
                            job.run(current, &device, lr, &loss_fn, &mut optimization, &*summing);
                        model = Some(next);
                        if loss_tx.send(loss).is_err() {
                            break;
                        }
                    }
                    (model, optimization)
                }));
            }
            let mut stepper = Stepper {
                lr,
                ranks: Ranks::Threads { jobs, results },
            };
            let result = body(&mut stepper);
            // Closing the job queues ends the threads' loops.
            drop(stepper);
            for (rank, handle) in handles.into_iter().enumerate() {
                match handle.join() {
                    Ok((model, optimization)) => {
                        self.models[rank] = model;
                        self.optimizations[rank] = optimization;
                    }
                    Err(_) => bail!("the replica on device {rank} stopped (see its panic above)"),
                }
            }
            result
        })
    }

    /// The other replicas take the leader's network (parameters and BatchNorm statistics) and
    /// its loss scale. With several replicas the leader is rebuilt the same way: its statistics
    /// were updated on its epoch's thread, and only a rebuild merges them (see [`replicate`]).
    fn follow_the_leader(&mut self) {
        let Some(leader) = self.models[0].clone() else {
            return;
        };
        if self.len() == 1 {
            self.models[0] = Some(self.sum.mark(leader));
            return;
        }
        let scaler = self.optimizations[0].scaler.clone();
        for rank in 0..self.len() {
            let copy = replicate(&leader, &self.devices[rank]);
            self.models[rank] = Some(self.sum.mark(copy));
            self.optimizations[rank].scaler.clone_from(&scaler);
        }
    }
}

/// burn's collective all-reduce over `devices` (CUDA GPUs), through NCCL, which the CUDA
/// runtime loads when it starts: only a machine with NVIDIA GPUs runs this.
#[cfg(feature = "cuda")]
fn nccl(devices: &[Device]) -> Result<Summing> {
    use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
    // Summed, not averaged: each replica's loss is already weighted by its share of the batch.
    let config = DistributedConfig {
        all_reduce_op: ReduceOperation::Sum,
    };
    Ok(Summing::Collective(DistributedContext::init(
        devices.to_vec(),
        config,
    )))
}

#[cfg(not(feature = "cuda"))]
fn nccl(_: &[Device]) -> Result<Summing> {
    bail!("summing gradients across GPUs needs a build with the `cuda` feature")
}

impl Summing {
    /// `model` with its trainable parameters marked for the collective all-reduce (as it is
    /// elsewhere).
    fn mark(&self, model: Network) -> Network {
        match self {
            #[cfg(feature = "cuda")]
            Summing::Collective(_) => model.map(&mut MarkDistributed),
            _ => model,
        }
    }

    /// How the replica `rank` (on `device`) sums its gradients with the others'.
    fn for_rank<'a>(&'a self, rank: usize, device: &Device) -> Box<dyn GradientSum + 'a> {
        match self {
            Summing::Host(host) => Box::new(HostRank {
                host,
                rank,
                device: device.clone(),
            }),
            _ => Box::new(Alone),
        }
    }
}

/// Marks every trainable parameter for burn's all-reduce in `backward`.
#[cfg(feature = "cuda")]
struct MarkDistributed;

#[cfg(feature = "cuda")]
impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        param.map(|t| {
            if t.is_require_grad() && !t.is_distributed() {
                t.set_distributed(id)
            } else {
                t
            }
        })
    }
}

/// `model` on `device`, a replica of its own. burn's BatchNorm statistics (`RunningState`)
/// are shared by every clone of a network, each thread's updates kept apart and averaged when
/// read; replicas stepped on their own threads must each have their own, or their statistics
/// would mix in whatever order the threads ran. The inference form merges the updates and
/// makes new statistics, and back in training form the parameters are new autodiff leaves
/// (their ids, and so the optimiser's state, unchanged; trainable ones still trainable).
fn replicate(model: &Network, device: &Device) -> Network {
    model.valid().train().fork(device)
}

/// One replica's share of a step: its shard of the batch, in host memory.
struct Job {
    shard: Batch,
    /// The images' side.
    side: usize,
    /// The shard's images over the batch's (see [`Shard::share`]).
    share: f64,
    /// What the network draws on the device this step (see [`Stepper::step`]).
    seed: u64,
}

impl Job {
    /// The step of `model` (on `device`) on this shard: its tensors moved there, the device
    /// seeded, then [`train_step`]. Returns the updated network and the shard's loss.
    fn run(
        self,
        model: Network,
        device: &Device,
        lr: f64,
        loss_fn: &CrossEntropyLoss,
        optimization: &mut Optimization,
        replicas: &dyn GradientSum,
    ) -> (Network, ShardLoss) {
        let n = self.shard.labels.len();
        let (images, labels) = self.shard.into_tensors(self.side, device);
        device.seed(self.seed);
        let shard = Shard {
            images,
            labels,
            share: self.share,
        };
        let (model, loss) = train_step(model, shard, lr, loss_fn, optimization, replicas);
        (model, (loss, n))
    }
}

/// Hands each batch of an epoch to the replicas.
pub struct Stepper<'a> {
    lr: f64,
    ranks: Ranks<'a>,
}

enum Ranks<'a> {
    /// One device, stepped on the loop's own thread.
    Here {
        replicas: &'a mut Replicas,
        loss_fn: Box<CrossEntropyLoss>,
    },
    /// One thread per replica.
    Threads {
        jobs: Vec<mpsc::Sender<Job>>,
        results: Vec<mpsc::Receiver<ShardLoss>>,
    },
}

impl Stepper<'_> {
    /// One training step on `batch` (images `side`×`side`), split into one shard per replica;
    /// `seed` seeds what the network draws on the device (ConvNeXt's stochastic depth), so a
    /// resumed run draws what it would have. Returns each shard's mean loss and size, or
    /// nothing when the batch is too small for every replica to get two images (BatchNorm
    /// needs more than one value per channel to train; and every replica must step, or the
    /// others would wait for it).
    pub fn step(&mut self, batch: Batch, side: usize, seed: u64) -> Result<Vec<ShardLoss>> {
        let total = batch.labels.len();
        match &mut self.ranks {
            Ranks::Here { replicas, loss_fn } => {
                if total < 2 {
                    return Ok(Vec::new());
                }
                let model = replicas.models[0]
                    .take()
                    .context("the network was lost in a failed step")?;
                let job = Job {
                    shard: batch,
                    side,
                    share: 1.0,
                    seed,
                };
                let (model, loss) = job.run(
                    model,
                    &replicas.devices[0],
                    self.lr,
                    loss_fn,
                    &mut replicas.optimizations[0],
                    &Alone,
                );
                replicas.models[0] = Some(model);
                Ok(vec![loss])
            }
            Ranks::Threads { jobs, results } => {
                let n = jobs.len();
                if total < 2 * n {
                    return Ok(Vec::new());
                }
                for (rank, shard) in shards(batch, n, side).into_iter().enumerate() {
                    let job = Job {
                        share: shard.labels.len() as f64 / total as f64,
                        shard,
                        side,
                        // Replica 0 draws what one device would.
                        seed: seed.wrapping_add((rank as u64) << 48),
                    };
                    jobs[rank]
                        .send(job)
                        .map_err(|_| anyhow::anyhow!("the replica on device {rank} stopped"))?;
                }
                results
                    .iter()
                    .enumerate()
                    .map(|(rank, r)| {
                        r.recv()
                            .map_err(|_| anyhow::anyhow!("the replica on device {rank} stopped"))
                    })
                    .collect()
            }
        }
    }
}

/// `batch` cut into `parts` shards in order, sizes differing by at most one image.
fn shards(batch: Batch, parts: usize, side: usize) -> Vec<Batch> {
    let per_image = 3 * side * side;
    let total = batch.labels.len();
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for part in 0..parts {
        let len = total / parts + usize::from(part < total % parts);
        let end = start + len;
        out.push(Batch {
            images: batch.images[start * per_image..end * per_image].to_vec(),
            labels: batch.labels[start..end].to_vec(),
            failed: Vec::new(),
        });
        start = end;
    }
    out
}

/// Gradients summed through host memory: every replica leaves its gradients in its slot, waits
/// for the others, then adds all the slots up in replica order on its own device — the same
/// additions in the same order everywhere, so every replica gets the same sums.
struct HostSum {
    // A Mutex, not a RwLock: gradients are `Send` but not `Sync`.
    slots: Mutex<Vec<Option<GradientsParams>>>,
    barrier: Barrier,
}

impl HostSum {
    fn new(n: usize) -> Self {
        HostSum {
            slots: Mutex::new((0..n).map(|_| None).collect()),
            barrier: Barrier::new(n),
        }
    }
}

struct HostRank<'a> {
    host: &'a HostSum,
    rank: usize,
    device: Device,
}

impl GradientSum for HostRank<'_> {
    fn sum(&self, grads: GradientsParams, model: &Network) -> GradientsParams {
        self.host.slots.lock().expect("no replica panicked")[self.rank] = Some(grads);
        self.host.barrier.wait();
        let total = {
            let slots = self.host.slots.lock().expect("no replica panicked");
            let mut adder = AddUp {
                slots: &slots,
                device: &self.device,
                total: GradientsParams::new(),
            };
            model.visit(&mut adder);
            adder.total
        };
        // Nobody overwrites a slot before everyone has read them all.
        self.host.barrier.wait();
        total
    }
}

struct AddUp<'a> {
    slots: &'a [Option<GradientsParams>],
    device: &'a Device,
    total: GradientsParams,
}

impl ModuleVisitor for AddUp<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let sum = self
            .slots
            .iter()
            .flatten()
            .filter_map(|grads| grads.get::<D>(param.id))
            .map(|g| g.to_device(self.device))
            .reduce(|a, b| a + b);
        if let Some(sum) = sum {
            self.total.register(param.id, sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::recipe::Recipe;
    use crate::train::stage;
    use crate::train::tensors;
    use petal_shared::{Arch, NetworkConfig};

    #[test]
    fn shards_are_in_order_and_differ_by_at_most_one_image() {
        let side = 1;
        let batch = Batch {
            images: (0..7 * 3).map(|v| v as f32).collect(),
            labels: (0..7).collect(),
            failed: Vec::new(),
        };
        let parts = shards(batch, 3, side);
        let sizes: Vec<usize> = parts.iter().map(|p| p.labels.len()).collect();
        assert_eq!(sizes, [3, 2, 2]);
        assert_eq!(parts[1].labels, [3, 4]);
        assert_eq!(
            parts[1].images,
            (9..15).map(|v| v as f32).collect::<Vec<_>>()
        );
        assert_eq!(parts[2].images.last(), Some(&20.0));
    }

    const SIDE: usize = 32;

    fn copy(batch: &Batch) -> Batch {
        Batch {
            images: batch.images.clone(),
            labels: batch.labels.clone(),
            failed: Vec::new(),
        }
    }

    /// `n` seeded images of `SIDE`², labels 0, 1, 2, 0, …
    fn images(n: usize, seed: u64) -> Batch {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Batch {
            images: (0..n * 3 * SIDE * SIDE)
                .map(|_| rng.random_range(-2.0f32..2.0))
                .collect(),
            labels: (0..n as i64).map(|i| i % 3).collect(),
            failed: Vec::new(),
        }
    }

    /// The network after two steps on `batches` of the recipe's `stage` (1: Adam, all but the
    /// stem; 2: SGD with momentum, everything), on `replicas` CPU replicas.
    fn after_two_steps(arch: Arch, stage: usize, replicas: usize, batches: &[Batch]) -> Network {
        let recipe = Recipe::default();
        let optimizer = stage::optimizer(&recipe.stages[stage]);
        after_two_steps_with(arch, stage, optimizer, replicas, batches)
    }

    fn after_two_steps_with(
        arch: Arch,
        stage: usize,
        optimizer: ModuleOptimizer,
        replicas: usize,
        batches: &[Batch],
    ) -> Network {
        let model = untrained(arch).without_stochastic_depth();
        let recipe = Recipe::default();
        let stage = &recipe.stages[stage];
        let optimization = Optimization {
            optimizer,
            scaler: None,
        };
        let devices = vec![Device::flex().autodiff(); replicas];
        let mut team = Replicas::new(model, optimization, devices, false).unwrap();
        team.map_models(|m| stage::set_trainable(m, stage.trainable));
        team.epoch(1e-2, |stepper| {
            for (i, batch) in batches.iter().enumerate() {
                let losses = stepper.step(copy(batch), SIDE, i as u64)?;
                assert_eq!(losses.len(), replicas);
                let images: usize = losses.iter().map(|(_, n)| n).sum();
                assert_eq!(images, batch.labels.len());
            }
            Ok(())
        })
        .unwrap();
        team.model().clone()
    }

    /// How far apart two networks' steps from `before` are: the largest, over the parameter
    /// tensors, of |step a − step b| / |step a| (Euclidean norms: Adam's update of an element
    /// whose gradient is rounding noise is ± the learning rate either way, so elements are not
    /// compared one by one), with that tensor's name; and how many tensors the steps changed.
    /// BatchNorm's running statistics are left out: a shard's unbiased variance has its own
    /// Bessel factor.
    fn compare(a: &Network, b: &Network, before: &Network) -> (f64, String, usize) {
        let (ta, tb, t0) = (tensors(a), tensors(b), tensors(before));
        let mut worst = (0.0f64, String::new());
        let mut changed = 0;
        for (((name, va), (_, vb)), (_, v0)) in ta.iter().zip(&tb).zip(&t0) {
            if name.contains("running_") || va == v0 {
                continue;
            }
            changed += 1;
            let (mut step, mut apart) = (0.0f64, 0.0f64);
            for ((x, y), z) in va.iter().zip(vb).zip(v0) {
                step += f64::from(x - z).powi(2);
                apart += f64::from(x - y).powi(2);
            }
            let rel = (apart / step).sqrt();
            if rel > worst.0 {
                worst = (rel, name.clone());
            }
        }
        (worst.0, worst.1, changed)
    }

    /// A network whose trainable parameters are drawn from a seeded generator of this test's
    /// own: the device's generator is shared with the tests running beside this one, and burn
    /// draws a parameter's initial values only when it is first read.
    fn untrained(arch: Arch) -> Network {
        use burn::module::ModuleMapper;
        use rand::{RngExt, SeedableRng};
        struct Reseed(rand::rngs::StdRng);
        impl ModuleMapper for Reseed {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let rng = &mut self.0;
                param.map(|t| {
                    if !t.is_require_grad() {
                        return t;
                    }
                    let shape = t.shape();
                    let values: Vec<f32> = (0..shape.num_elements())
                        .map(|_| rng.random_range(-0.1f32..0.1))
                        .collect();
                    Tensor::from_data(TensorData::new(values, shape), &t.device()).require_grad()
                })
            }
        }
        let device = Device::flex().autodiff();
        let model = NetworkConfig::new(arch, 3).init(&device);
        model.map(&mut Reseed(rand::rngs::StdRng::seed_from_u64(7)))
    }

    /// ConvNeXt normalises each image on its own (LayerNorm), so shards whose gradients are
    /// summed by their share must give the one-device step on the whole batch: here 7 images
    /// in unequal shards of 3, 2 and 2, for Adam and for SGD with momentum, two steps each (the
    /// second one uses the optimiser's state).
    #[test]
    fn convnext_on_three_replicas_takes_the_one_device_step() {
        let batches = [images(7, 1), images(7, 2)];
        for stage in [1, 2] {
            let one = after_two_steps(Arch::ConvNeXtTiny, stage, 1, &batches);
            let three = after_two_steps(Arch::ConvNeXtTiny, stage, 3, &batches);
            let (worst, name, changed) = compare(&one, &three, &untrained(Arch::ConvNeXtTiny));
            assert!(
                changed > 100,
                "stage {stage}: only {changed} tensors trained"
            );
            assert!(
                worst < 1e-3,
                "stage {stage}: {name}'s step differs by {worst:e}"
            );
        }
    }

    /// ResNet's BatchNorm normalises each shard by the shard's own statistics (as PyTorch's
    /// DistributedDataParallel does), so its one-device step is only defined for shards whose
    /// statistics are the batch's: a batch made of one shard twice. Summing the two replicas'
    /// gradients by their share must then give the one-device step; summing them unweighted
    /// (twice the gradient) or keeping one replica's would not. Adam's first steps are ± the
    /// learning rate for every element whatever the gradient's size, and this small network at
    /// 32 px has many gradients near rounding level, whose sign either run may flip (6% of the
    /// elements with the recipe's epsilon of 1e-8, while SGD's steps agree to 1e-7): Adam is
    /// checked with an epsilon of 1e-3, above that level. Measured: SGD's steps 1.0e-4 apart,
    /// Adam's 3.1e-3.
    #[test]
    fn resnet_on_two_replicas_takes_the_one_device_step() {
        let twice = |b: Batch| Batch {
            images: [b.images.clone(), b.images].concat(),
            labels: [b.labels.clone(), b.labels].concat(),
            failed: Vec::new(),
        };
        let batches = [twice(images(4, 3)), twice(images(4, 4))];
        let adam = || burn::optim::AdamConfig::new().with_epsilon(1e-3).init();
        for (stage, optimizer, tolerance) in [(2, None, 1e-3), (1, Some(adam), 1e-2)] {
            let run = |replicas| match optimizer {
                Some(adam) => {
                    after_two_steps_with(Arch::ResNet18, stage, adam(), replicas, &batches)
                }
                None => after_two_steps(Arch::ResNet18, stage, replicas, &batches),
            };
            let (one, two) = (run(1), run(2));
            let (worst, name, changed) = compare(&one, &two, &untrained(Arch::ResNet18));
            assert!(
                changed > 50,
                "stage {stage}: only {changed} tensors trained"
            );
            assert!(
                worst < tolerance,
                "stage {stage}: {name}'s step differs by {worst:e}"
            );
        }
    }

    /// The check above can fail: two replicas whose gradients were not weighted by their
    /// share (each taking the whole batch's mean) step twice as far with SGD.
    #[test]
    fn unweighted_shards_would_step_twice_as_far() {
        let device = Device::flex().autodiff();
        let batch = images(4, 5);
        let run = |share: f64| {
            let model = untrained(Arch::ResNet18);
            let stage = &Recipe::default().stages[2];
            let model = stage::set_trainable(model, stage.trainable);
            let mut optimization = Optimization {
                optimizer: burn::optim::SgdConfig::new().init(),
                scaler: None,
            };
            let (images, labels) = copy(&batch).into_tensors(SIDE, &device);
            let loss_fn = CrossEntropyLossConfig::new().init(&device);
            let shard = Shard {
                images,
                labels,
                share,
            };
            train_step(model, shard, 1e-2, &loss_fn, &mut optimization, &Alone).0
        };
        let before = untrained(Arch::ResNet18);
        let (once, twice) = (run(1.0), run(2.0));
        let step = |m: &Network| {
            tensors(m)
                .into_iter()
                .zip(tensors(&before))
                .find(|((name, _), _)| name == "fc.weight")
                .map(|((_, after), (_, b))| after[0] - b[0])
                .unwrap()
        };
        let ratio = step(&twice) / step(&once);
        assert!((ratio - 2.0).abs() < 1e-3, "{ratio}");
        let (worst, _, _) = compare(&once, &twice, &before);
        assert!(worst > 1e-3, "the weighting made no difference");
    }
}
