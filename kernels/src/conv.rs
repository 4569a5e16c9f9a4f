//! 2-D convolution on channels-last activations: one GEMM per tile of output pixels.

use crate::Nhwc;
use crate::par::{for_each_chunk, gemm_parallelism, threads};

thread_local! {
    /// Each thread's im2col buffer, kept between tiles and layers: allocating (and faulting
    /// in) a fresh one per tile cost more than the copy into it.
    static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Output pixels per tile, before balancing across threads. Large enough that the GEMM's own
/// packing of the weights is repaid many times over (it packs them once per call), small
/// enough that a tile's im2col rows and outputs stay in the core's caches.
const TILE_ROWS: usize = 256;

/// A convolution ready for inference: weights packed for the GEMM, bias (typically a folded
/// BatchNorm) kept beside them. No groups, no dilation: what ResNets use.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[kh · kw · c_in, c_out]`, row-major: row `(ky · kw + kx) · c_in + ci` holds the weights
    /// every output channel gives input channel `ci` at kernel position `(ky, kx)` — the order
    /// in which an NHWC im2col row lists its inputs.
    weight: Vec<f32>,
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Packs PyTorch/burn weights `[c_out, c_in, kh, kw]` (`shape`), with an optional bias
    /// per output channel, symmetric zero `padding` and the same `stride` on both axes.
    ///
    /// # Panics
    /// If `weight` or `bias` does not match `shape`, or the stride is zero.
    pub fn new(
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: [usize; 4],
        stride: usize,
        padding: usize,
    ) -> Self {
        let [c_out, c_in, kh, kw] = shape;
        assert_eq!(weight.len(), c_out * c_in * kh * kw, "weight for {shape:?}");
        assert!(stride > 0, "stride must be positive");
        let k = kh * kw * c_in;
        let mut packed = vec![0.0; k * c_out];
        // A transpose: blocks of output channels keep both the reads (one source row per
        // channel) and the writes (a short contiguous run per packed row) in cache.
        const BLOCK: usize = 16;
        for co0 in (0..c_out).step_by(BLOCK) {
            let cos = co0..(co0 + BLOCK).min(c_out);
            for ci in 0..c_in {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = (ky * kw + kx) * c_in + ci;
                        let src = (ci * kh + ky) * kw + kx;
                        for co in cos.clone() {
                            packed[row * c_out + co] = weight[co * k + src];
                        }
                    }
                }
            }
        }
        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), c_out, "bias for {c_out} output channels");
                b.to_vec()
            }
            None => vec![0.0; c_out],
        };
        Self {
            weight: packed,
            bias,
            c_in,
            c_out,
            kernel: [kh, kw],
            stride,
            padding,
        }
    }

    pub fn in_channels(&self) -> usize {
        self.c_in
    }

    pub fn out_channels(&self) -> usize {
        self.c_out
    }

    /// Output height and width for an `h × w` input (PyTorch's rule, no dilation).
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let size = |i: usize, k: usize| (i + 2 * self.padding).saturating_sub(k) / self.stride + 1;
        (size(h, self.kernel[0]), size(w, self.kernel[1]))
    }

    /// `relu?(conv(x) + bias + residual?)`.
    ///
    /// - `x`: `[n, h, w, c_in]`
    /// - `residual`: `[n, h', w', c_out]`, added before the ReLU (a ResNet block's shortcut)
    /// - returns `[n, h', w', c_out]` with `(h', w')` = [`out_size`](Self::out_size)
    ///
    /// # Panics
    /// If `x` has the wrong channel count or `residual` the wrong shape.
    pub fn forward(&self, x: &Nhwc, residual: Option<&Nhwc>, relu: bool) -> Nhwc {
        self.forward_into(x, residual, relu, Vec::new())
    }

    /// [`forward`](Self::forward) writing into `buffer`, a spare allocation whose contents are
    /// ignored. Reusing the buffers of activations that are no longer needed spares the
    /// allocator a round trip to the kernel (and the page faults) for every layer.
    pub fn forward_into(
        &self,
        x: &Nhwc,
        residual: Option<&Nhwc>,
        relu: bool,
        buffer: Vec<f32>,
    ) -> Nhwc {
        assert_eq!(x.c, self.c_in, "input channels");
        let (oh, ow) = self.out_size(x.h, x.w);
        let rows = x.n * oh * ow;
        if let Some(r) = residual {
            assert_eq!(
                (r.n, r.h, r.w, r.c),
                (x.n, oh, ow, self.c_out),
                "residual shape"
            );
        }
        // Every output value is written by the GEMM, so a large enough buffer is used as it is
        // (its old values are valid floats); a smaller one is dropped rather than grown, which
        // would copy its stale contents.
        let len = rows * self.c_out;
        let mut out = if buffer.capacity() >= len {
            buffer
        } else {
            Vec::new()
        };
        if out.len() >= len {
            out.truncate(len);
        } else {
            out.resize(len, 0.0);
        }
        let [kh, kw] = self.kernel;
        // A 1×1, stride-1, unpadded convolution reads its input rows as they are.
        let direct = kh == 1 && kw == 1 && self.stride == 1 && self.padding == 0;
        let k = kh * kw * self.c_in;

        let (tile, parallel_tiles) = split_rows(rows);
        let par = gemm_parallelism(parallel_tiles);
        let run_tile = |t: usize, dst: &mut [f32]| {
            let r0 = t * tile;
            let n_rows = dst.len() / self.c_out;
            if direct {
                let lhs = &x.data[r0 * k..(r0 + n_rows) * k];
                gemm_rows(dst, lhs, k, n_rows, k, &self.weight, self.c_out, par);
            } else {
                // Taken out rather than borrowed: a thread waiting inside the GEMM may run
                // another tile, which then simply gets a buffer of its own.
                let mut col = COL.take();
                self.im2col(&mut col, x, oh, ow, r0, n_rows);
                gemm_rows(dst, &col, k, n_rows, k, &self.weight, self.c_out, par);
                COL.set(col);
            }
            let res = residual.map(|r| &r.data[r0 * self.c_out..(r0 + n_rows) * self.c_out]);
            epilogue(dst, &self.bias, res, relu);
        };
        if parallel_tiles {
            for_each_chunk(&mut out, tile * self.c_out, run_tile);
        } else {
            out.chunks_mut(tile * self.c_out)
                .enumerate()
                .for_each(|(t, dst)| run_tile(t, dst));
        }
        Nhwc::new(x.n, oh, ow, self.c_out, out)
    }

    /// Fills `col` with the im2col rows of output pixels `r0 .. r0 + n_rows`: row `r` lists,
    /// for each kernel position, the `c_in` input channels under it (zeros where the kernel
    /// hangs over the padding). Every value is written, so `col` can be reused unzeroed.
    fn im2col(&self, col: &mut Vec<f32>, x: &Nhwc, oh: usize, ow: usize, r0: usize, n_rows: usize) {
        let [kh, kw] = self.kernel;
        let c = self.c_in;
        let k = kh * kw * c;
        if col.len() < n_rows * k {
            col.resize(n_rows * k, 0.0);
        }
        for (i, row) in col[..n_rows * k].chunks_exact_mut(k).enumerate() {
            let r = r0 + i;
            let (b, rem) = (r / (oh * ow), r % (oh * ow));
            let (oy, ox) = (rem / ow, rem % ow);
            for ky in 0..kh {
                let taps = &mut row[ky * kw * c..(ky + 1) * kw * c];
                let Some(iy) = (oy * self.stride + ky)
                    .checked_sub(self.padding)
                    .filter(|&iy| iy < x.h)
                else {
                    taps.fill(0.0);
                    continue;
                };
                for (kx, tap) in taps.chunks_exact_mut(c).enumerate() {
                    match (ox * self.stride + kx)
                        .checked_sub(self.padding)
                        .filter(|&ix| ix < x.w)
                    {
                        Some(ix) => {
                            let src = ((b * x.h + iy) * x.w + ix) * c;
                            tap.copy_from_slice(&x.data[src..src + c]);
                        }
                        None => tap.fill(0.0),
                    }
                }
            }
        }
    }
}

/// Tile length (in rows) and whether tiles should run in parallel: enough tiles to keep every
/// thread busy with equal shares, else one GEMM at a time on all threads.
fn split_rows(rows: usize) -> (usize, bool) {
    let threads = threads();
    let tiles = rows.div_ceil(TILE_ROWS).max(1);
    if threads > 1 && tiles >= 2 * threads {
        // Round the tile count up to a multiple of the thread count so shares are equal.
        let tiles = tiles.div_ceil(threads) * threads;
        (rows.div_ceil(tiles).max(1), true)
    } else {
        (TILE_ROWS.min(rows.max(1)), false)
    }
}

/// `dst[m, n] = lhs[m, k] · weight[k, n]`, all row-major; `lhs` rows are `lhs_rs` apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_rows(
    dst: &mut [f32],
    lhs: &[f32],
    lhs_rs: usize,
    m: usize,
    k: usize,
    weight: &[f32],
    n: usize,
    parallelism: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n && weight.len() >= k * n);
    assert!(m == 0 || lhs.len() >= (m - 1) * lhs_rs + k);
    // SAFETY: the asserts above keep every index the GEMM touches (row i < m, column j < n,
    // inner p < k with the given strides) inside the three slices; `dst` is exclusively
    // borrowed and overlaps neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            weight.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Adds the bias (per column) and the residual, then clamps at zero — one pass over a tile
/// that the GEMM has just written, while it is still in cache.
fn epilogue(dst: &mut [f32], bias: &[f32], residual: Option<&[f32]>, relu: bool) {
    let n = bias.len();
    match residual {
        Some(res) => {
            for (row, res_row) in dst.chunks_exact_mut(n).zip(res.chunks_exact(n)) {
                for ((v, b), r) in row.iter_mut().zip(bias).zip(res_row) {
                    *v += b + r;
                }
            }
        }
        None => {
            for row in dst.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
    }
    if relu {
        for v in dst.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence in [-1, 1) (no test dependency on `rand`).
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The textbook definition on NCHW data, accumulated in f64: the oracle.
    #[allow(clippy::too_many_arguments)]
    fn naive_nchw(
        x: &[f32],
        [n, c_in, h, w]: [usize; 4],
        weight: &[f32],
        [c_out, _, kh, kw]: [usize; 4],
        bias: &[f32],
        stride: usize,
        pad: usize,
    ) -> (Vec<f64>, usize, usize) {
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        let mut out = vec![0.0f64; n * c_out * oh * ow];
        for b in 0..n {
            for co in 0..c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = f64::from(bias[co]);
                        for ci in 0..c_in {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * stride + ky) as isize - pad as isize;
                                    let ix = (ox * stride + kx) as isize - pad as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((b * c_in + ci) * h + iy as usize) * w + ix as usize];
                                    let wv = weight[((co * c_in + ci) * kh + ky) * kw + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[((b * c_out + co) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        (out, oh, ow)
    }

    /// Every ResNet convolution shape (1×1, strided 1×1, 3×3, strided 3×3, the 7×7 stem) on
    /// odd sizes, with and without residual and ReLU, against the oracle.
    #[test]
    fn matches_the_definition() {
        let cases = [
            // (n, c_in, h, w, c_out, k, stride, pad)
            (2, 5, 9, 7, 6, 1, 1, 0),
            (2, 5, 9, 7, 6, 1, 2, 0),
            (1, 4, 11, 10, 3, 3, 1, 1),
            (3, 4, 11, 10, 7, 3, 2, 1),
            (1, 3, 23, 19, 8, 7, 2, 3),
            // Enough pixels for several tiles (and parallel tiles with the feature on).
            (4, 8, 30, 30, 16, 3, 1, 1),
        ];
        for (i, &(n, c_in, h, w, c_out, k, stride, pad)) in cases.iter().enumerate() {
            let x = noise(n * c_in * h * w, 1 + i as u64);
            let weight = noise(c_out * c_in * k * k, 100 + i as u64);
            let bias = noise(c_out, 200 + i as u64);
            let (want, oh, ow) = naive_nchw(
                &x,
                [n, c_in, h, w],
                &weight,
                [c_out, c_in, k, k],
                &bias,
                stride,
                pad,
            );
            let conv = Conv2d::new(&weight, Some(&bias), [c_out, c_in, k, k], stride, pad);
            assert_eq!(conv.out_size(h, w), (oh, ow), "case {i}");
            let input = Nhwc::from_nchw(&x, n, c_in, h, w);
            let residual_nchw = noise(n * c_out * oh * ow, 300 + i as u64);
            let residual = Nhwc::from_nchw(&residual_nchw, n, c_out, oh, ow);

            let plain = conv.forward(&input, None, false).to_nchw();
            let fused = conv.forward(&input, Some(&residual), true).to_nchw();
            for (j, w) in want.iter().enumerate() {
                let tol = 1e-4 * (1.0 + w.abs());
                assert!((f64::from(plain[j]) - w).abs() < tol, "case {i} at {j}");
                let f = (w + f64::from(residual_nchw[j])).max(0.0);
                assert!(
                    (f64::from(fused[j]) - f).abs() < tol,
                    "case {i} fused at {j}"
                );
            }
        }
    }
}
