/// A batch of feature maps stored channels-last: element `(b, y, x, c)` is at
/// `((b · h + y) · w + x) · c_total + c`. Each pixel's channels are contiguous, which is what
/// the convolution's GEMM reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Nhwc {
    /// Wraps `data` (`n · h · w · c` values, channels last).
    ///
    /// # Panics
    /// If the length does not match the shape.
    pub fn new(n: usize, h: usize, w: usize, c: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            n * h * w * c,
            "NHWC data length for {n}×{h}×{w}×{c}"
        );
        Self { n, h, w, c, data }
    }

    /// Converts `[n, c, h, w]` (burn's and PyTorch's layout) to channels-last.
    pub fn from_nchw(data: &[f32], n: usize, c: usize, h: usize, w: usize) -> Self {
        assert_eq!(
            data.len(),
            n * c * h * w,
            "NCHW data length for {n}×{c}×{h}×{w}"
        );
        let plane = h * w;
        let mut out = vec![0.0; data.len()];
        for b in 0..n {
            let src = &data[b * c * plane..(b + 1) * c * plane];
            let dst = &mut out[b * c * plane..(b + 1) * c * plane];
            for (p, pixel) in dst.chunks_exact_mut(c).enumerate() {
                for (ch, v) in pixel.iter_mut().enumerate() {
                    *v = src[ch * plane + p];
                }
            }
        }
        Self::new(n, h, w, c, out)
    }

    /// The same values in `[n, c, h, w]` order.
    pub fn to_nchw(&self) -> Vec<f32> {
        let plane = self.h * self.w;
        let c = self.c;
        let mut out = vec![0.0; self.data.len()];
        for b in 0..self.n {
            let src = &self.data[b * c * plane..(b + 1) * c * plane];
            let dst = &mut out[b * c * plane..(b + 1) * c * plane];
            for (p, pixel) in src.chunks_exact(c).enumerate() {
                for (ch, v) in pixel.iter().enumerate() {
                    dst[ch * plane + p] = *v;
                }
            }
        }
        out
    }

    /// Number of pixels over the whole batch (`n · h · w`): the rows of a convolution's GEMM.
    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_round_trip() {
        let data: Vec<f32> = (0..2 * 3 * 4 * 5).map(|v| v as f32).collect();
        let x = Nhwc::from_nchw(&data, 2, 3, 4, 5);
        // (b=1, y=2, x=3, c=1) in NCHW is at ((1·3 + 1)·4 + 2)·5 + 3 = 93.
        assert_eq!(x.data[((4 + 2) * 5 + 3) * 3 + 1], 93.0);
        assert_eq!(x.to_nchw(), data);
    }
}
