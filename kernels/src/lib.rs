//! CPU inference kernels for Petal's networks.
//!
//! burn's CPU backend (flex) computes each convolution on its own: it converts the input from
//! NCHW to NHWC, re-packs the weights, builds im2col tiles, runs a GEMM and scatters the result
//! back to NCHW — on every call — and every BatchNorm, ReLU and residual add is another full
//! pass over memory. An inference-only runtime can do better with the same GEMM:
//!
//! - activations stay channels-last ([`Nhwc`]) from the first layer to the last, so a 1×1
//!   convolution is a plain GEMM on the activation itself and a k×k one gathers contiguous
//!   channel runs;
//! - weights are packed once, when the layer is built ([`Conv2d::new`]), in the order the GEMM
//!   reads them;
//! - bias (a folded BatchNorm), the residual add and ReLU are applied while an output tile is
//!   still in cache ([`Conv2d::forward`]);
//! - the work is split into row tiles that run on all cores (feature `parallel`), and the
//!   GEMM itself goes parallel when there are too few tiles to share.
//!
//! Nothing here knows about ResNet or burn: `petal-shared` builds its inference network from
//! these pieces, and its tests check them against burn's own kernels.

mod conv;
mod linear;
mod nhwc;
mod par;
mod pool;

pub use conv::Conv2d;
pub use linear::Linear;
pub use nhwc::Nhwc;
pub use pool::{global_avg_pool, max_pool};
