//! Petal in the browser: the wasm side of the web page.
//!
//! Everything that touches pixels, weights or result rows lives here and comes from
//! `petal-shared`, the code the `petal` CLI runs: the preprocessing
//! (`Preprocessor::tensor_from_bytes`), the network through the shared runtime
//! (`petal_shared::runtime`: burn's module on WebGPU; on the CPU fallback a ResNet folded for
//! inference, as `petal predict` runs it, and any other family as burn's module), the bundle
//! loader, softmax/top-k, and `petal score`'s file rules (which files of a folder, their names,
//! their order) and CSV. `web/app.js` only moves bytes and draws the page.
//!
//! # WebGPU without blocking
//!
//! A browser's main thread cannot block: any `Condvar::wait` or re-entrant lock panics with
//! "condvar wait not supported" (burn issue #1922, burn-onnx #325). The paths that block are
//! (1) a synchronous readback (`into_data`), (2) autotune, which times kernels by waiting for
//! the GPU, and (3) fusion, whose stream flush waits on results. This crate enables neither
//! `autotune` nor `fusion` (see `Cargo.toml`), initialises the wgpu runtime with
//! `init_async`, and reads results only asynchronously (the runtime's `*_async` methods, one
//! transaction per pass).

pub mod backend;
pub mod score_csv;

#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
pub use page::*;
