//! Petal in the browser: the wasm side of the web page.
//!
//! Everything that touches pixels or weights lives here and comes from `petal-shared` — the
//! same preprocessing (`Preprocessor::tensor_from_bytes`), the same network (`ResNet`), the same
//! bundle loader and the same softmax/top-k as the `petal` CLI. `web/app.js` only moves bytes
//! and draws the page.
//!
//! # WebGPU without blocking
//!
//! A browser's main thread cannot block: any `Condvar::wait` or re-entrant lock panics with
//! "condvar wait not supported" (burn issue #1922, burn-onnx #325). The paths that block are
//! (1) a synchronous readback (`into_data`), (2) autotune, which times kernels by waiting for
//! the GPU, and (3) fusion, whose stream flush waits on results. This crate enables neither
//! `autotune` nor `fusion` (see `Cargo.toml`), initialises the wgpu runtime with
//! `init_async`, and reads results only with `into_data_async`.

pub mod score_csv;

#[cfg(target_arch = "wasm32")]
mod page;
#[cfg(target_arch = "wasm32")]
pub use page::*;
