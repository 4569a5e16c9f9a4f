//! The wasm-bindgen API the page script (`web/app.js`) calls.

use burn::prelude::*;
use image::RgbImage;
use petal_shared::cam::{self, ClassMap, ClassMaps, CropGeometry};
use petal_shared::classify::{ranked, softmax};
use petal_shared::runtime::{self, Evidence, RuntimeOptions};
use petal_shared::{Bundle, BundleMeta, Preprocessor};
use serde::Serialize;
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// Installs a panic hook that reports Rust panics on the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("petal-web panicked: {info}").into());
    }));
}

/// Milliseconds from the page's clock (`performance.now()`, also inside a worker).
fn now_ms() -> f64 {
    let global = js_sys::global();
    if let Some(window) = global.dyn_ref::<web_sys::Window>()
        && let Some(p) = window.performance()
    {
        return p.now();
    }
    if let Some(scope) = global.dyn_ref::<web_sys::WorkerGlobalScope>()
        && let Some(p) = scope.performance()
    {
        return p.now();
    }
    js_sys::Date::now()
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The normalised input tensor (`[3, image_size, image_size]` CHW `f32`) for encoded image bytes — exactly
/// what `petal preprocess` writes. Used by the parity test and the benchmark.
#[wasm_bindgen]
pub fn preprocess(bytes: &[u8], resize: usize, image_size: usize) -> Result<Vec<f32>, JsError> {
    let pre = Preprocessor::new(resize, image_size).map_err(js_err)?;
    pre.tensor_from_bytes(bytes).map_err(js_err)
}

/// Checks `petal.json` without loading weights, so the page can show a clear message (and
/// class names) before downloading a large weights file.
#[wasm_bindgen(js_name = parseMeta)]
pub fn parse_meta(meta_json: &[u8]) -> Result<String, JsError> {
    let meta = BundleMeta::from_json(meta_json).map_err(js_err)?;
    Ok(meta_summary(&meta))
}

fn meta_summary(meta: &BundleMeta) -> String {
    serde_json::json!({
        "arch": meta.arch.name(),
        "classes": meta.classes,
        "image_size": meta.image_size,
        "resize": meta.resize,
        "precision": meta.precision,
        "weights": meta.weights,
        "source": meta.source,
    })
    .to_string()
}

/// One classified image, as the page shows it.
#[derive(Serialize)]
struct Classified {
    top: Vec<petal_shared::classify::Prediction>,
    /// Raw logits (for tests against `petal predict --json --logits`).
    logits: Vec<f32>,
    /// Softmax probabilities of every class (the CSV and the tests use them).
    probs: Vec<f32>,
    /// The photo's size: the heat maps are drawn over it.
    width: u32,
    height: u32,
    /// Class activation maps of the top classes, in the order of `top` (see
    /// [`petal_shared::cam`]); [`heat_png`] draws one over the photo.
    maps: Vec<ClassMap>,
    /// Grad-CAM maps of the same classes.
    grad_maps: Vec<ClassMap>,
    preprocess_ms: f64,
    /// This photo's share of its network pass: the pass's time over `batch`.
    inference_ms: f64,
    /// How many photos went through the network in the pass this one ran in.
    batch: usize,
}

/// One entry of [`Classifier::classify_batch`]'s answer: a file's outcome or its error.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchEntry {
    Classified(Box<Classified>),
    Failed { error: String },
}

/// The bundle on its backend, and which backend that is.
struct Loaded {
    /// The same runtime as `petal predict`'s: burn's module on WebGPU; on the CPU a ResNet
    /// folded for inference (BatchNorm folded into the convolutions, channels-last kernels),
    /// other networks burn's module.
    classifier: runtime::Classifier,
    backend: &'static str,
}

/// A loaded bundle on the chosen backend.
#[wasm_bindgen]
pub struct Classifier {
    inner: Rc<Loaded>,
    /// Serialises inference: one network pass at a time on the device.
    busy: Rc<Cell<bool>>,
}

/// Marks the classifier busy until dropped, across the awaits of one image's work: a second
/// call meanwhile is refused rather than interleaved on the device.
struct Busy(Rc<Cell<bool>>);

impl Busy {
    fn claim(flag: &Rc<Cell<bool>>) -> Result<Self, JsError> {
        if flag.replace(true) {
            return Err(JsError::new("the classifier is busy with another image"));
        }
        Ok(Busy(Rc::clone(flag)))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The device the page computes on: WebGPU when allowed and an adapter exists, else flex.
async fn pick_device(allow_gpu: bool) -> (Device, &'static str, Option<String>) {
    if !allow_gpu {
        return (Device::flex(), "cpu", Some("WebGPU disabled".into()));
    }
    match Device::wgpu_options().init_async().await {
        Ok(device) => (device, "webgpu", None),
        Err(e) => (Device::flex(), "cpu", Some(e.to_string())),
    }
}

#[wasm_bindgen]
impl Classifier {
    /// Loads a bundle from its two files. `allow_gpu` false (or no WebGPU adapter) selects the
    /// CPU backend. The weight bytes are consumed: once the model is on the GPU, no CPU copy
    /// of the weights is kept.
    pub async fn load(
        meta_json: Vec<u8>,
        weights: Vec<u8>,
        allow_gpu: bool,
    ) -> Result<Classifier, JsError> {
        let (device, backend, why_cpu) = pick_device(allow_gpu).await;
        if let Some(why) = why_cpu {
            web_sys::console::info_1(&format!("petal: CPU backend ({why})").into());
        }
        let bundle = Bundle::from_bytes(&meta_json, weights, &device).map_err(js_err)?;
        let inner = Loaded {
            classifier: runtime::Classifier::new(bundle, &device, RuntimeOptions::default())
                .map_err(js_err)?,
            backend,
        };
        // One warm-up pass: compiles the shaders now rather than on the first photo, and
        // proves the network runs on this backend before the page says "ready".
        warm_up(&inner).await?;
        Ok(Classifier {
            inner: Rc::new(inner),
            busy: Rc::new(Cell::new(false)),
        })
    }

    /// `webgpu` or `cpu`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.inner.backend.to_string()
    }

    /// The bundle's metadata summary (arch, classes, sizes) as JSON.
    #[wasm_bindgen(getter)]
    pub fn meta(&self) -> String {
        meta_summary(&self.inner.classifier.meta)
    }

    /// Classifies several encoded images (an array of `Uint8Array`) in one pass of the
    /// network: on WebGPU each kernel is dispatched once for all of them rather than once per
    /// photo, and read back once. Resolves to a JSON array with one entry per file, in order:
    /// an outcome `{top: [{index, label, prob}], logits, probs, width, height, maps,
    /// grad_maps, preprocess_ms, inference_ms, batch}`, or `{error}` naming what is wrong with
    /// a file that does not decode; the other files still run.
    #[wasm_bindgen(js_name = classifyBatch)]
    pub fn classify_batch(&self, files: js_sys::Array, k: usize) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let busy = Rc::clone(&self.busy);
        wasm_bindgen_futures::future_to_promise(async move {
            let _busy = Busy::claim(&busy)?;
            // Each file is decoded, preprocessed and dropped in turn: only the network's
            // inputs of the whole batch are held at once.
            let mut entries = Vec::with_capacity(files.length() as usize);
            let mut inputs = Vec::new();
            for file in files.iter() {
                let t0 = now_ms();
                let bytes = file
                    .dyn_into::<js_sys::Uint8Array>()
                    .map_err(|_| JsError::new("classifyBatch takes an array of Uint8Array"))?
                    .to_vec();
                match inner.classifier.preprocessor.decode(&bytes) {
                    Ok(photo) => {
                        inputs.push(prepare(&inner, &photo, t0));
                        entries.push(None);
                    }
                    Err(e) => entries.push(Some(BatchEntry::Failed {
                        error: e.to_string(),
                    })),
                }
            }
            let mut outcomes = if inputs.is_empty() {
                Vec::new()
            } else {
                classify(&inner, inputs, k).await?
            }
            .into_iter();
            let entries: Vec<BatchEntry> = entries
                .into_iter()
                .map(|entry| {
                    entry.unwrap_or_else(|| match outcomes.next() {
                        Some(outcome) => BatchEntry::Classified(Box::new(outcome)),
                        None => BatchEntry::Failed {
                            error: "no result from the network".into(),
                        },
                    })
                })
                .collect();
            Ok(JsValue::from_str(
                &serde_json::to_string(&entries).map_err(js_err)?,
            ))
        })
    }

    /// Classifies raw RGBA pixels (a video frame from a canvas, `width · height · 4` bytes; the
    /// alpha is dropped as decoding does); resolves to one outcome as
    /// [`classify_batch`](Self::classify_batch) gives it.
    #[wasm_bindgen(js_name = classifyPixels)]
    pub fn classify_pixels(
        &self,
        rgba: Vec<u8>,
        width: u32,
        height: u32,
        k: usize,
    ) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        let busy = Rc::clone(&self.busy);
        wasm_bindgen_futures::future_to_promise(async move {
            let _busy = Busy::claim(&busy)?;
            let t0 = now_ms();
            let photo = rgb_from_rgba(&rgba, width, height)?;
            let outcome = classify(&inner, vec![prepare(&inner, &photo, t0)], k).await?;
            Ok(JsValue::from_str(
                &serde_json::to_string(&outcome[0]).map_err(js_err)?,
            ))
        })
    }
}

fn rgb_from_rgba(rgba: &[u8], width: u32, height: u32) -> Result<RgbImage, JsError> {
    if width == 0 || height == 0 || rgba.len() != 4 * width as usize * height as usize {
        return Err(JsError::new(&format!(
            "{} bytes are not {width}×{height} RGBA pixels",
            rgba.len()
        )));
    }
    let rgb = rgba
        .chunks_exact(4)
        .flat_map(|px| [px[0], px[1], px[2]])
        .collect();
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| JsError::new("bad pixel buffer"))
}

/// Runs preprocessed images through the network; reads back without blocking (a synchronous
/// read would block on the GPU, see lib.rs).
async fn forward(inner: &Loaded, tensors: &[Vec<f32>]) -> Result<Evidence, JsError> {
    let images = inner.classifier.images(tensors).map_err(js_err)?;
    inner
        .classifier
        .runtime
        .evidence_async(images)
        .await
        .map_err(js_err)
}

async fn warm_up(inner: &Loaded) -> Result<(), JsError> {
    let side = inner.classifier.preprocessor.image_size;
    forward(inner, &[vec![0.0; 3 * side * side]]).await?;
    Ok(())
}

/// A decoded photo made ready for the network; the photo itself is not kept.
struct Prepared {
    tensor: Vec<f32>,
    width: u32,
    height: u32,
    /// Since the work on this photo started (decoding counts as preprocessing).
    preprocess_ms: f64,
}

/// `t0`: when the work on this photo started.
fn prepare(inner: &Loaded, photo: &RgbImage, t0: f64) -> Prepared {
    let tensor = inner.classifier.preprocessor.tensor_from_image(photo);
    Prepared {
        tensor,
        width: photo.width(),
        height: photo.height(),
        preprocess_ms: now_ms() - t0,
    }
}

/// Runs prepared photos through the network in one pass; one outcome each, in order.
async fn classify(
    inner: &Loaded,
    photos: Vec<Prepared>,
    k: usize,
) -> Result<Vec<Classified>, JsError> {
    let n = photos.len();
    let (tensors, sizes): (Vec<_>, Vec<_>) = photos
        .into_iter()
        .map(|p| (p.tensor, (p.width, p.height, p.preprocess_ms)))
        .unzip();
    let t1 = now_ms();
    let evidence = forward(inner, &tensors).await?;
    let share = (now_ms() - t1) / n as f64;
    let k = k.max(1);
    evidence
        .logits
        .rows()
        .zip(sizes)
        .enumerate()
        .map(|(i, (logits, (width, height, preprocess_ms)))| {
            let probs = softmax(logits);
            let top = ranked(&probs, inner.classifier.classes(), k);
            let of = |maps: &ClassMaps| {
                top.iter()
                    .map(|p| maps.map(i, p.index))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(js_err)
            };
            let (maps, grad_maps) = (of(&evidence.cam)?, of(&evidence.grad_cam)?);
            Ok(Classified {
                top,
                probs,
                logits: logits.to_vec(),
                width,
                height,
                maps,
                grad_maps,
                preprocess_ms,
                inference_ms: share,
                batch: n,
            })
        })
        .collect()
}

/// A class map (one of an outcome's `maps`, as JSON) drawn for a `width × height` photo: the
/// map taken back through the bundle's resize (`resize`) and center crop (`image_size`), as
/// an RGBA PNG whose longer side is at most `max_side` — jet colours over the crop, transparent
/// where the network saw nothing. The page lays it over the photo with an opacity slider.
#[wasm_bindgen(js_name = heatPng)]
pub fn heat_png(
    map_json: &str,
    width: u32,
    height: u32,
    resize: usize,
    image_size: usize,
    max_side: u32,
) -> Result<Vec<u8>, JsError> {
    let map: ClassMap = serde_json::from_str(map_json).map_err(js_err)?;
    if map.height * map.width != map.values.len() || map.values.is_empty() {
        return Err(JsError::new("a class map's values do not fill its grid"));
    }
    let pre = Preprocessor::new(resize, image_size).map_err(js_err)?;
    let geometry = CropGeometry::new(width, height, &pre);
    let (w, h) = cam::fit_within(width, height, max_side.max(1));
    let normalised = cam::normalise(&geometry.project(&map, w, h));
    cam::png_bytes(&cam::heat_layer(&normalised, w, h)).map_err(js_err)
}

/// The page's backend decision (see [`crate::backend`]): `requested` is `?backend=`'s value,
/// `adapter_json` the adapter's facts (`null` without WebGPU). Returns `{backend, reason}`.
#[wasm_bindgen(js_name = chooseBackend)]
pub fn choose_backend(requested: &str, adapter_json: &str) -> Result<String, JsError> {
    let adapter: Option<crate::backend::AdapterFacts> =
        serde_json::from_str(adapter_json).map_err(js_err)?;
    let choice = crate::backend::choose(
        crate::backend::Requested::parse(requested),
        adapter.as_ref(),
    );
    serde_json::to_string(&choice).map_err(js_err)
}

/// `petal score`'s CSV for the batch table; see [`crate::score_csv::score_csv`].
#[wasm_bindgen(js_name = scoreCsv)]
pub fn score_csv(rows_json: &str) -> Result<String, JsError> {
    crate::score_csv::score_csv(rows_json).map_err(|e| JsError::new(&e))
}

// `petal score`'s file rules for the page's folder input and drops (`petal_shared::files`):
// which files a folder contributes, their names and their order. The script only calls these.

/// Whether a file found in a chosen folder is an image `petal score` would take.
#[wasm_bindgen(js_name = isImageName)]
pub fn is_image_name(name: &str) -> bool {
    petal_shared::files::is_image_name(name)
}

/// Whether a path inside a chosen folder passes through a hidden entry (skipped).
#[wasm_bindgen(js_name = isHidden)]
pub fn is_hidden(path: &str) -> bool {
    petal_shared::files::is_hidden(path)
}

/// A file's name relative to the folder the user chose.
#[wasm_bindgen(js_name = folderRelative)]
pub fn folder_relative(path: &str) -> String {
    petal_shared::files::folder_relative(path)
}

/// `petal score`'s row order, as a JavaScript comparator (-1, 0, 1).
#[wasm_bindgen(js_name = comparePaths)]
pub fn compare_paths(a: &str, b: &str) -> i32 {
    petal_shared::files::compare_paths(a, b) as i32
}
