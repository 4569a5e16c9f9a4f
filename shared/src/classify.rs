//! From logits to answers: softmax and top-k on the CPU, identical in the CLI and the browser.

use serde::{Deserialize, Serialize};

/// One ranked class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Index into the bundle's class list.
    pub index: usize,
    pub label: String,
    pub prob: f32,
}

/// Numerically stable softmax in `f64`, returned as `f32`.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / total) as f32).collect()
}

/// Indices of the `k` largest values, largest first; ties keep the lower index first. NaN
/// never panics (`total_cmp` orders it above every number).
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// The class a network predicts from one image's logits: the top of the softmax, ties to the
/// lower index. Every accuracy Petal reports (validation, `eval`, the score CSV, `explain`)
/// uses this rule, so they agree on the same images.
pub fn predicted_class(logits: &[f32]) -> usize {
    top_k_indices(&softmax(logits), 1)
        .first()
        .copied()
        .unwrap_or(0)
}

/// The cross-entropy of one image's logits against its true `class`: `−log softmax[class]`,
/// computed in `f64` from the log-sum-exp.
///
/// # Panics
/// If `class` is not an index into `logits`.
pub fn cross_entropy(logits: &[f32], class: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(max) + sum.ln() - f64::from(logits[class])
}

/// The `k` most probable classes for one image's logits.
pub fn top_k(logits: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    ranked(&softmax(logits), labels, k)
}

/// The `k` most probable classes for one image's probabilities (a [`softmax`] already
/// computed), named by `labels`.
pub fn ranked(probs: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    top_k_indices(probs, k)
        .into_iter()
        .map(|index| Prediction {
            index,
            label: labels
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("class {index}")),
            prob: probs[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
    }

    #[test]
    fn top_k_orders_and_handles_nan() {
        assert_eq!(top_k_indices(&[0.1, 0.7, 0.2], 2), vec![1, 2]);
        assert_eq!(top_k_indices(&[0.5, 0.5], 2), vec![0, 1]);
        assert_eq!(top_k_indices(&[f32::NAN, 1.0], 5), vec![0, 1]);
    }

    #[test]
    fn cross_entropy_is_minus_log_softmax() {
        let logits = [0.5, -1.0, 2.0];
        for class in 0..3 {
            let want = -f64::from(softmax(&logits)[class]).ln();
            assert!(
                (cross_entropy(&logits, class) - want).abs() < 1e-6,
                "class {class}"
            );
        }
        // Large logits: no overflow, the loss of the winner is near zero.
        assert!(cross_entropy(&[1000.0, 0.0], 0).abs() < 1e-12);
        assert!((cross_entropy(&[1000.0, 0.0], 1) - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn predicted_class_is_the_top_of_the_softmax() {
        assert_eq!(predicted_class(&[0.1, 3.0, 2.0]), 1);
        // Logits that differ below f32's resolution of the probabilities tie: the lower index,
        // although the second logit is the larger one.
        let (a, b) = (1e-3_f32, 1e-3_f32 + 1e-8);
        assert!(b > a);
        assert_eq!(predicted_class(&[a, b]), 0);
        assert_eq!(predicted_class(&[f32::NAN, 1.0]), 0);
    }

    #[test]
    fn top_k_labels() {
        let labels = vec!["daisy".to_string(), "rose".to_string()];
        let top = top_k(&[0.0, 2.0], &labels, 1);
        assert_eq!(top[0].label, "rose");
        assert!((top[0].prob - 0.880_797).abs() < 1e-5);
    }
}
