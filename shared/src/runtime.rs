//! The one way Petal runs a network for answers: `predict`, `score`, `eval`, `explain`,
//! validation during training, the web page and the benchmarks all go through [`Runtime`].
//!
//! A runtime is built from a [`Network`] and a device. On the CPU a network that has a folded
//! inference form ([`Network::fold`]) runs as that (BatchNorm folded into the convolutions,
//! channels-last kernels); everywhere else burn's module runs on the device. Both give the
//! same [`Logits`] and the same class maps ([`Evidence`]), read back to the host in one
//! transaction, synchronously ([`Runtime::logits`]) or, in the browser, asynchronously
//! ([`Runtime::logits_async`]): a synchronous read there would block on the GPU.
//!
//! [`Classifier`] adds what a bundle knows (class names, preprocessing) on top.

use crate::bundle::{Bundle, BundleMeta};
use crate::cam::{CamError, ClassMaps, class_maps_from_data};
use crate::classify::{Prediction, predicted_class, softmax, top_k};
use crate::model::{FoldError, FoldedNetwork, Maps, Network};
use crate::preprocess::Preprocessor;
use burn::prelude::*;
use burn::tensor::{TensorData, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot prepare the network for the CPU: {0}")]
    Fold(#[from] FoldError),
    #[error("{len} input values are not {n} images of 3×{height}×{width}")]
    Shape {
        len: usize,
        n: usize,
        height: usize,
        width: usize,
    },
    #[error("cannot read the network's output back: {0}")]
    Read(String),
    #[error(transparent)]
    Maps(#[from] CamError),
}

/// How a [`Runtime`] runs its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// On the CPU, run the folded inference form where the family has one. Off only for
    /// comparisons (`PETAL_NO_FOLD` in the CLI, the benchmark's burn column).
    pub fold: bool,
    /// Test-time augmentation: [`Runtime::logits`] averages the probabilities of each image
    /// and its mirror image.
    pub mirror: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            fold: true,
            mirror: false,
        }
    }
}

/// Normalised images laid end to end: `[n, 3, height, width]`, row-major (what
/// [`Preprocessor`] produces, one image after the other).
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    values: Vec<f32>,
    n: usize,
    height: usize,
    width: usize,
}

impl Images {
    pub fn new(
        values: Vec<f32>,
        n: usize,
        height: usize,
        width: usize,
    ) -> Result<Self, RuntimeError> {
        if values.len() != n * 3 * height * width {
            return Err(RuntimeError::Shape {
                len: values.len(),
                n,
                height,
                width,
            });
        }
        Ok(Self {
            values,
            n,
            height,
            width,
        })
    }

    /// Square `[3, side, side]` tensors, one per image, in order.
    pub fn from_tensors(tensors: &[Vec<f32>], side: usize) -> Result<Self, RuntimeError> {
        Self::new(tensors.concat(), tensors.len(), side, side)
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Each image's mirror image: every row of every channel plane reversed.
    fn mirrored(&self) -> Self {
        let mut values = self.values.clone();
        values.chunks_mut(self.width).for_each(<[f32]>::reverse);
        Self { values, ..*self }
    }

    /// The pixels moved onto `device`, without a copy on the host.
    fn into_tensor(self, device: &Device) -> Tensor<4> {
        let data = TensorData::new(self.values, [self.n, 3, self.height, self.width]);
        Tensor::from_data(data, device)
    }
}

/// A batch's logits on the host: `[n, classes]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    values: Vec<f32>,
    classes: usize,
}

impl Logits {
    fn new(values: Vec<f32>, classes: usize) -> Self {
        debug_assert!(classes > 0 && values.len().is_multiple_of(classes));
        Self { values, classes }
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.classes
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Image `i`'s logits.
    ///
    /// # Panics
    /// If `i` is not below [`len`](Self::len).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.classes..][..self.classes]
    }

    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f32]> {
        self.values.chunks_exact(self.classes)
    }

    pub fn into_rows(self) -> Vec<Vec<f32>> {
        self.rows().map(<[f32]>::to_vec).collect()
    }

    /// Image `i`'s predicted class, by Petal's one rule ([`predicted_class`]).
    pub fn predicted(&self, i: usize) -> usize {
        predicted_class(self.row(i))
    }

    /// The log of each image's averaged probabilities with `other`'s: a softmax of the result
    /// gives exactly that average, so every consumer of logits stays the same.
    fn averaged_with(&self, other: &Logits) -> Logits {
        let values = self
            .rows()
            .zip(other.rows())
            .flat_map(|(a, b)| {
                softmax(a)
                    .into_iter()
                    .zip(softmax(b))
                    .map(|(p, q)| ((f64::from(p) + f64::from(q)) / 2.0).ln() as f32)
            })
            .collect();
        Logits::new(values, self.classes)
    }
}

/// One pass's logits with the evidence for every class (see [`crate::cam`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub logits: Logits,
    /// Class activation maps, `[n, h, w, classes]`: each map's mean is its logit.
    pub cam: ClassMaps,
    /// Grad-CAM maps, `[n, h, w, classes]` (see [`Maps::grad_cam`]).
    pub grad_cam: ClassMaps,
}

/// What computes: burn's module on its device, or the folded CPU form.
enum Engine {
    /// Boxed: the module's struct is large and there is one per runtime.
    Burn {
        model: Box<Network>,
        device: Device,
    },
    Folded(FoldedNetwork),
}

/// A network ready to answer on a device (see the [module](self) documentation).
pub struct Runtime {
    engine: Engine,
    classes: usize,
    options: RuntimeOptions,
}

/// A result computed but not yet read back: on the host already (the folded network), or
/// tensors on the device, read in one transaction.
enum Staged<T> {
    Ready(T),
    Pending {
        reads: Transaction,
        finish: fn(Vec<TensorData>, usize) -> Result<T, RuntimeError>,
        classes: usize,
    },
}

impl<T> Staged<T> {
    fn read(self) -> Result<T, RuntimeError> {
        match self {
            Staged::Ready(value) => Ok(value),
            Staged::Pending {
                reads,
                finish,
                classes,
            } => finish(reads.try_execute().map_err(read_error)?, classes),
        }
    }

    async fn read_async(self) -> Result<T, RuntimeError> {
        match self {
            Staged::Ready(value) => Ok(value),
            Staged::Pending {
                reads,
                finish,
                classes,
            } => finish(reads.execute_async().await.map_err(read_error)?, classes),
        }
    }
}

fn read_error(e: impl std::fmt::Debug) -> RuntimeError {
    RuntimeError::Read(format!("{e:?}"))
}

fn logits_from(data: TensorData, classes: usize) -> Result<Logits, RuntimeError> {
    let values = data.try_into_vec_as::<f32>().map_err(read_error)?;
    Ok(Logits::new(values, classes))
}

fn finish_logits(mut data: Vec<TensorData>, classes: usize) -> Result<Logits, RuntimeError> {
    logits_from(data.remove(0), classes)
}

fn finish_evidence(data: Vec<TensorData>, classes: usize) -> Result<Evidence, RuntimeError> {
    let [logits, cam, grad_cam]: [TensorData; 3] = data
        .try_into()
        .map_err(|d: Vec<_>| RuntimeError::Read(format!("{} tensors instead of 3", d.len())))?;
    let f32s = |d: TensorData| d.convert::<f32>();
    Ok(Evidence {
        logits: logits_from(logits, classes)?,
        cam: class_maps_from_data(f32s(cam))?,
        grad_cam: class_maps_from_data(f32s(grad_cam))?,
    })
}

impl Runtime {
    /// `network` as it computes (its precision included), on `device`. On the CPU
    /// (`Device::flex()`) a family with a folded form runs folded when `options.fold` says so;
    /// the folded form computes in f32.
    pub fn new(
        network: Network,
        device: &Device,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let classes = network.num_classes();
        let engine = if options.fold && *device == Device::flex() && network.can_fold() {
            // The burn module is dropped once folded: only one copy of the weights stays.
            Engine::Folded(network.fold()?)
        } else {
            Engine::Burn {
                model: Box::new(network),
                device: device.clone(),
            }
        };
        Ok(Self {
            engine,
            classes,
            options,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Whether the folded CPU form computes (rather than burn's module).
    pub fn is_folded(&self) -> bool {
        matches!(self.engine, Engine::Folded(_))
    }

    /// The batch's logits (with test-time augmentation if the options ask for it). The images
    /// are consumed: on a GPU their pixels move to the device without another copy.
    pub fn logits(&self, images: Images) -> Result<Logits, RuntimeError> {
        let mirrored = self.options.mirror.then(|| images.mirrored());
        let plain = self.stage_logits(images).read()?;
        match mirrored {
            None => Ok(plain),
            Some(m) => Ok(plain.averaged_with(&self.stage_logits(m).read()?)),
        }
    }

    /// [`logits`](Self::logits), read back without blocking (the browser).
    pub async fn logits_async(&self, images: Images) -> Result<Logits, RuntimeError> {
        let mirrored = self.options.mirror.then(|| images.mirrored());
        let plain = self.stage_logits(images).read_async().await?;
        match mirrored {
            None => Ok(plain),
            Some(m) => Ok(plain.averaged_with(&self.stage_logits(m).read_async().await?)),
        }
    }

    /// The batch's logits and every class's maps, from one pass (no test-time augmentation:
    /// a map belongs to the image as the network saw it).
    pub fn evidence(&self, images: Images) -> Result<Evidence, RuntimeError> {
        self.stage_evidence(images).read()
    }

    /// [`evidence`](Self::evidence), read back without blocking (the browser).
    pub async fn evidence_async(&self, images: Images) -> Result<Evidence, RuntimeError> {
        self.stage_evidence(images).read_async().await
    }

    fn stage_logits(&self, images: Images) -> Staged<Logits> {
        match &self.engine {
            Engine::Folded(net) => Staged::Ready(Logits::new(
                net.forward(&images.values, images.n, images.height, images.width),
                self.classes,
            )),
            Engine::Burn { model, device } => Staged::Pending {
                reads: Transaction::default().register(model.forward(images.into_tensor(device))),
                finish: finish_logits,
                classes: self.classes,
            },
        }
    }

    fn stage_evidence(&self, images: Images) -> Staged<Evidence> {
        match &self.engine {
            Engine::Folded(net) => {
                let (logits, cam) = net.forward_with_class_maps(
                    &images.values,
                    images.n,
                    images.height,
                    images.width,
                );
                Staged::Ready(Evidence {
                    logits: Logits::new(logits, self.classes),
                    grad_cam: net.grad_cam(&cam),
                    cam,
                })
            }
            Engine::Burn { model, device } => {
                let Maps {
                    logits,
                    cam,
                    grad_cam,
                } = model.maps(images.into_tensor(device));
                Staged::Pending {
                    reads: Transaction::default()
                        .register(logits)
                        .register(cam)
                        .register(grad_cam),
                    finish: finish_evidence,
                    classes: self.classes,
                }
            }
        }
    }
}

/// A bundle ready to classify: its metadata, its preprocessing and its [`Runtime`].
pub struct Classifier {
    pub meta: BundleMeta,
    pub preprocessor: Preprocessor,
    pub runtime: Runtime,
}

impl Classifier {
    pub fn new(
        bundle: Bundle,
        device: &Device,
        options: RuntimeOptions,
    ) -> Result<Self, RuntimeError> {
        let Bundle { meta, model } = bundle;
        Ok(Self {
            preprocessor: meta.preprocessor(),
            runtime: Runtime::new(model, device, options)?,
            meta,
        })
    }

    pub fn classes(&self) -> &[String] {
        &self.meta.classes
    }

    /// Square preprocessed tensors (`[3, S, S]` for this bundle's `S`) as one batch.
    pub fn images(&self, tensors: &[Vec<f32>]) -> Result<Images, RuntimeError> {
        Images::from_tensors(tensors, self.preprocessor.image_size)
    }

    /// The `k` most probable classes of one image's logits, named.
    pub fn top_k(&self, logits: &[f32], k: usize) -> Vec<Prediction> {
        top_k(logits, self.classes(), k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, NetworkConfig};

    fn images(n: usize, side: usize, device: &Device) -> Images {
        let x = Tensor::<4>::random(
            [n, 3, side, side],
            burn::tensor::Distribution::Default,
            device,
        );
        Images::new(x.into_data().try_into_vec::<f32>().unwrap(), n, side, side).unwrap()
    }

    /// The same network (`net`'s weights) on the CPU, run with `options`.
    fn on_cpu(net: &Network, options: RuntimeOptions) -> Runtime {
        Runtime::new(net.clone(), &Device::flex(), options).unwrap()
    }

    #[test]
    fn folded_and_burn_engines_agree_on_logits_and_maps() {
        let device = Device::flex();
        let net = NetworkConfig::new(Arch::ResNet18, 5).init(&device);
        let folded = on_cpu(&net, RuntimeOptions::default());
        let burn = on_cpu(
            &net,
            RuntimeOptions {
                fold: false,
                ..RuntimeOptions::default()
            },
        );
        assert!(folded.is_folded() && !burn.is_folded());
        let x = images(2, 64, &device);
        let (a, b) = (
            folded.evidence(x.clone()).unwrap(),
            burn.evidence(x.clone()).unwrap(),
        );
        let gap =
            |p: &[f32], q: &[f32]| p.iter().zip(q).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
        assert_eq!((a.logits.len(), a.logits.classes()), (2, 5));
        assert!(gap(&a.logits.values, &b.logits.values) < 1e-4);
        assert_eq!(
            (a.cam.n, a.cam.height, a.cam.width, a.cam.classes),
            (2, 2, 2, 5)
        );
        assert!(gap(&a.cam.values, &b.cam.values) < 1e-4);
        assert!(gap(&a.grad_cam.values, &b.grad_cam.values) < 1e-4);
        assert_eq!(a.logits, folded.logits(x).unwrap());
        for i in 0..2 {
            assert_eq!(a.logits.predicted(i), b.logits.predicted(i));
        }
    }

    #[test]
    fn mirror_averages_the_probabilities_of_both_views() {
        let device = Device::flex();
        let net = NetworkConfig::new(Arch::ResNet18, 3).init(&device);
        let plain = on_cpu(&net, RuntimeOptions::default());
        let tta = on_cpu(
            &net,
            RuntimeOptions {
                mirror: true,
                ..RuntimeOptions::default()
            },
        );
        let x = images(1, 32, &device);
        let got = softmax(tta.logits(x.clone()).unwrap().row(0));
        let p = softmax(plain.logits(x.clone()).unwrap().row(0));
        let q = softmax(plain.logits(x.mirrored()).unwrap().row(0));
        for c in 0..3 {
            assert!((got[c] - (p[c] + q[c]) / 2.0).abs() < 1e-6, "class {c}");
        }
        assert_ne!(p, q, "the mirror image is another input");
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let err = Images::new(vec![0.0; 10], 1, 2, 2).unwrap_err();
        assert_eq!(err.to_string(), "10 input values are not 1 images of 3×2×2");
    }
}
