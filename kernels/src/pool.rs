//! Pooling on channels-last activations.

use crate::Nhwc;
use crate::par::for_each_chunk;

/// Max pooling over `kernel × kernel` windows; the padding never wins (PyTorch's `-inf` pad).
///
/// `[n, h, w, c]` → `[n, h', w', c]`, `h' = (h + 2·padding − kernel) / stride + 1`.
pub fn max_pool(x: &Nhwc, kernel: usize, stride: usize, padding: usize) -> Nhwc {
    let size = |i: usize| (i + 2 * padding).saturating_sub(kernel) / stride + 1;
    let (oh, ow) = (size(x.h), size(x.w));
    let c = x.c;
    let mut out = vec![f32::NEG_INFINITY; x.n * oh * ow * c];
    // One output row (all its pixels and channels) per task.
    for_each_chunk(&mut out, ow * c, |row_index, row| {
        let (b, oy) = (row_index / oh, row_index % oh);
        for ky in 0..kernel {
            let Some(iy) = (oy * stride + ky).checked_sub(padding).filter(|&y| y < x.h) else {
                continue;
            };
            let src_row = &x.data[(b * x.h + iy) * x.w * c..(b * x.h + iy + 1) * x.w * c];
            for (ox, dst) in row.chunks_exact_mut(c).enumerate() {
                for kx in 0..kernel {
                    let Some(ix) = (ox * stride + kx).checked_sub(padding).filter(|&v| v < x.w)
                    else {
                        continue;
                    };
                    for (d, s) in dst.iter_mut().zip(&src_row[ix * c..(ix + 1) * c]) {
                        *d = d.max(*s);
                    }
                }
            }
        }
    });
    Nhwc::new(x.n, oh, ow, c, out)
}

/// Mean over all pixels of each image: `[n, h, w, c]` → `[n, c]` (row-major).
pub fn global_avg_pool(x: &Nhwc) -> Vec<f32> {
    let c = x.c;
    let plane = x.h * x.w;
    let mut out = vec![0.0f32; x.n * c];
    for (b, sums) in out.chunks_exact_mut(c).enumerate() {
        for pixel in x.data[b * plane * c..(b + 1) * plane * c].chunks_exact(c) {
            for (s, v) in sums.iter_mut().zip(pixel) {
                *s += v;
            }
        }
        let scale = 1.0 / plane as f32;
        sums.iter_mut().for_each(|s| *s *= scale);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::noise;

    #[test]
    fn max_pool_matches_the_definition() {
        let (n, c, h, w) = (2, 3, 9, 8);
        let nchw = noise(n * c * h * w, 7);
        let out = max_pool(&Nhwc::from_nchw(&nchw, n, c, h, w), 3, 2, 1);
        assert_eq!((out.h, out.w), (5, 4));
        let got = out.to_nchw();
        for b in 0..n {
            for ch in 0..c {
                for oy in 0usize..5 {
                    for ox in 0usize..4 {
                        let mut want = f32::NEG_INFINITY;
                        for y in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                            for x in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                                want = want.max(nchw[((b * c + ch) * h + y) * w + x]);
                            }
                        }
                        assert_eq!(got[((b * c + ch) * 5 + oy) * 4 + ox], want);
                    }
                }
            }
        }
    }

    #[test]
    fn average_pool_is_the_mean() {
        let (n, c, h, w) = (2, 4, 3, 5);
        let nchw = noise(n * c * h * w, 9);
        let got = global_avg_pool(&Nhwc::from_nchw(&nchw, n, c, h, w));
        for (i, plane) in nchw.chunks_exact(h * w).enumerate() {
            let want = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / (h * w) as f64;
            assert!((f64::from(got[i]) - want).abs() < 1e-6, "{i}");
        }
    }
}
