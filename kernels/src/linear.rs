//! The fully connected head.

use crate::conv::gemm_rows;
use crate::par::gemm_parallelism;

/// `y = x · W + b` with `W` stored `[d_in, d_out]` (burn's `Linear` layout, the transpose of
/// PyTorch's).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    d_in: usize,
    d_out: usize,
}

impl Linear {
    /// # Panics
    /// If `weight` is not `d_in · d_out` long or `bias` not `d_out`.
    pub fn new(weight: Vec<f32>, bias: Option<Vec<f32>>, d_in: usize, d_out: usize) -> Self {
        assert_eq!(weight.len(), d_in * d_out, "weight for {d_in}→{d_out}");
        let bias = bias.unwrap_or_else(|| vec![0.0; d_out]);
        assert_eq!(bias.len(), d_out, "bias for {d_out} outputs");
        Self {
            weight,
            bias,
            d_in,
            d_out,
        }
    }

    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// The bias, one value per output.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// `[n, d_in]` → `[n, d_out]`, row-major.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.d_in;
        assert_eq!(x.len(), n * self.d_in, "input rows of {}", self.d_in);
        let mut out = vec![0.0; n * self.d_out];
        gemm_rows(
            &mut out,
            x,
            self.d_in,
            n,
            self.d_in,
            &self.weight,
            self.d_out,
            gemm_parallelism(false),
        );
        for row in out.chunks_exact_mut(self.d_out) {
            row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::tests::noise;

    #[test]
    fn matches_the_definition() {
        let (n, d_in, d_out) = (3, 17, 5);
        let x = noise(n * d_in, 1);
        let w = noise(d_in * d_out, 2);
        let b = noise(d_out, 3);
        let y = Linear::new(w.clone(), Some(b.clone()), d_in, d_out).forward(&x);
        for i in 0..n {
            for j in 0..d_out {
                let want: f32 = b[j]
                    + (0..d_in)
                        .map(|p| x[i * d_in + p] * w[p * d_out + j])
                        .sum::<f32>();
                assert!((y[i * d_out + j] - want).abs() < 1e-5);
            }
        }
    }
}
