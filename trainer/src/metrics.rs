//! Classification metrics from a confusion matrix: accuracy, per-class precision / recall / F1,
//! support, macro and support-weighted averages, and the matrix as CSV.
//!
//! Zero divisions: a ratio whose denominator is 0 is defined as **0** — the precision of a
//! class that was never predicted, the recall of a class with no images, the F1 of a class
//! with neither, the accuracy of an empty matrix. This is scikit-learn's `zero_division=0`,
//! so our numbers can be checked against `classification_report`, and a class the model never
//! gets right is never reported as perfect.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::Path;

/// Counts of (true class, predicted class) pairs: rows are true classes, columns predictions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    n: usize,
    /// Row-major `n × n`.
    counts: Vec<u64>,
}

/// Precision, recall and F1 of one class (or an average of them), with its support.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Images whose true class this is (for an average: all images).
    pub support: u64,
}

/// `num / den`, or 0 when `den` is 0 (see the module comment).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl ConfusionMatrix {
    /// An empty matrix for `n` classes.
    pub fn new(n: usize) -> Self {
        Self {
            n,
            counts: vec![0; n * n],
        }
    }

    pub fn classes(&self) -> usize {
        self.n
    }

    /// Counts one image of class `truth` predicted as `predicted`. Both are class indices
    /// produced by our own code (folder labels, arg-max over the bundle's classes), so an
    /// index out of range is a bug, not bad input: it panics.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        assert!(
            truth < self.n && predicted < self.n,
            "class index ({truth}, {predicted}) out of range for {} classes",
            self.n
        );
        self.counts[truth * self.n + predicted] += 1;
    }

    /// Images of class `truth` predicted as `predicted`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.n + predicted]
    }

    /// The matrix as rows (true class) of counts per predicted class.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        if self.n == 0 {
            return Vec::new();
        }
        self.counts.chunks(self.n).map(<[u64]>::to_vec).collect()
    }

    /// All counted images.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Images on the diagonal.
    pub fn correct(&self) -> u64 {
        (0..self.n).map(|c| self.count(c, c)).sum()
    }

    /// Correct / total (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// Images whose true class is `class` (its row sum).
    pub fn support(&self, class: usize) -> u64 {
        (0..self.n).map(|p| self.count(class, p)).sum()
    }

    /// Images predicted as `class` (its column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        (0..self.n).map(|t| self.count(t, class)).sum()
    }

    /// True positives / everything predicted as `class`.
    pub fn precision(&self, class: usize) -> f64 {
        ratio(self.count(class, class), self.predicted(class))
    }

    /// True positives / every image of `class`.
    pub fn recall(&self, class: usize) -> f64 {
        ratio(self.count(class, class), self.support(class))
    }

    /// Harmonic mean of precision and recall, computed as `2·TP / (2·TP + FP + FN)`: equal to
    /// `2PR / (P + R)` whenever that is defined, and 0 when the class has no true positive.
    pub fn f1(&self, class: usize) -> f64 {
        let tp = self.count(class, class);
        let fp = self.predicted(class) - tp;
        let fne = self.support(class) - tp;
        ratio(2 * tp, 2 * tp + fp + fne)
    }

    pub fn scores(&self, class: usize) -> ClassScores {
        ClassScores {
            precision: self.precision(class),
            recall: self.recall(class),
            f1: self.f1(class),
            support: self.support(class),
        }
    }

    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.n).map(|c| self.scores(c)).collect()
    }

    /// Unweighted mean over all classes, those without images included (scikit-learn's
    /// `average="macro"` over the full label list): a class the data lacks pulls it down
    /// rather than silently disappearing.
    pub fn macro_avg(&self) -> ClassScores {
        let per = self.per_class();
        let mean = |f: fn(&ClassScores) -> f64| {
            if per.is_empty() {
                0.0
            } else {
                per.iter().map(f).sum::<f64>() / per.len() as f64
            }
        };
        ClassScores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: self.total(),
        }
    }

    /// Mean over classes weighted by support (scikit-learn's `average="weighted"`); its recall
    /// equals the accuracy.
    pub fn weighted_avg(&self) -> ClassScores {
        let per = self.per_class();
        let total = self.total();
        let mean = |f: fn(&ClassScores) -> f64| {
            if total == 0 {
                0.0
            } else {
                per.iter().map(|s| f(s) * s.support as f64).sum::<f64>() / total as f64
            }
        };
        ClassScores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: total,
        }
    }

    /// The matrix as CSV: header `true\pred,<class...>`, then one row per true class starting
    /// with its name. Class names are quoted by the CSV writer where they need it.
    pub fn to_csv(&self, classes: &[String]) -> Result<Vec<u8>> {
        self.check_names(classes)?;
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["true\\pred".to_string()];
        header.extend(classes.iter().cloned());
        w.write_record(&header)?;
        for (name, row) in classes.iter().zip(self.rows()) {
            let mut record = vec![name.clone()];
            record.extend(row.iter().map(u64::to_string));
            w.write_record(&record)?;
        }
        w.into_inner()
            .context("cannot finish the confusion matrix CSV")
    }

    /// Writes [`Self::to_csv`] to `path` atomically (a reader never sees half a file).
    pub fn write_csv(&self, path: &Path, classes: &[String]) -> Result<()> {
        let bytes = self.to_csv(classes)?;
        petal_shared::fs::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub(crate) fn check_names(&self, classes: &[String]) -> Result<()> {
        if classes.len() != self.n {
            bail!(
                "{} class names for a {n}×{n} confusion matrix",
                classes.len(),
                n = self.n
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four classes a, b, c, d; rows true, columns predicted:
    ///
    /// ```text
    ///        a  b  c  d   support
    ///   a    4  1  0  1      6
    ///   b    2  3  0  0      5
    ///   c    0  2  0  0      2      c is never predicted: precision 0/0 → 0
    ///   d    0  0  0  0      0      d has no images:       recall    0/0 → 0
    /// pred   6  6  0  1     13
    /// ```
    ///
    /// By hand: accuracy (4+3)/13 = 7/13.
    /// a: P 4/6 = 2/3, R 4/6 = 2/3, F1 2·4/(8+2+2) = 2/3.
    /// b: P 3/6 = 1/2, R 3/5, F1 2·3/(6+3+2) = 6/11 (= 2·½·⅗ / (½+⅗)).
    /// c: P 0/0 → 0, R 0/2 = 0, F1 0/(0+0+2) = 0.
    /// d: P 0/1 = 0, R 0/0 → 0, F1 0/(0+1+0) = 0.
    /// Macro: P (2/3+1/2)/4 = 7/24, R (2/3+3/5)/4 = 19/60, F1 (2/3+6/11)/4 = 10/33.
    /// Weighted by support (6,5,2,0)/13: P (4+2.5)/13 = 1/2, R (4+3)/13 = 7/13 (= accuracy),
    /// F1 (4 + 30/11)/13 = 74/143.
    fn example() -> ConfusionMatrix {
        let mut m = ConfusionMatrix::new(4);
        let pairs = [
            (0, 0, 4),
            (0, 1, 1),
            (0, 3, 1),
            (1, 0, 2),
            (1, 1, 3),
            (2, 1, 2),
        ];
        for (t, p, k) in pairs {
            for _ in 0..k {
                m.add(t, p);
            }
        }
        m
    }

    fn names() -> Vec<String> {
        ["a", "b", "c", "d"].map(String::from).to_vec()
    }

    #[track_caller]
    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
    }

    #[test]
    fn counts_and_accuracy() {
        let m = example();
        assert_eq!(
            m.rows(),
            vec![
                vec![4, 1, 0, 1],
                vec![2, 3, 0, 0],
                vec![0, 2, 0, 0],
                vec![0, 0, 0, 0]
            ]
        );
        assert_eq!((m.total(), m.correct()), (13, 7));
        close(m.accuracy(), 7.0 / 13.0);
        assert_eq!(
            (0..4).map(|c| m.support(c)).collect::<Vec<_>>(),
            [6, 5, 2, 0]
        );
        assert_eq!(
            (0..4).map(|c| m.predicted(c)).collect::<Vec<_>>(),
            [6, 6, 0, 1]
        );
    }

    #[test]
    fn per_class_scores_with_zero_divisions() {
        let m = example();
        let want = [
            (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 6),
            (1.0 / 2.0, 3.0 / 5.0, 6.0 / 11.0, 5),
            (0.0, 0.0, 0.0, 2),
            (0.0, 0.0, 0.0, 0),
        ];
        for (c, (p, r, f, s)) in want.into_iter().enumerate() {
            let got = m.scores(c);
            close(got.precision, p);
            close(got.recall, r);
            close(got.f1, f);
            assert_eq!(got.support, s);
        }
    }

    #[test]
    fn macro_and_weighted_averages() {
        let m = example();
        let mac = m.macro_avg();
        close(mac.precision, 7.0 / 24.0);
        close(mac.recall, 19.0 / 60.0);
        close(mac.f1, 10.0 / 33.0);
        assert_eq!(mac.support, 13);
        let w = m.weighted_avg();
        close(w.precision, 0.5);
        close(w.recall, 7.0 / 13.0);
        close(w.recall, m.accuracy());
        close(w.f1, 74.0 / 143.0);
    }

    #[test]
    fn empty_matrix_is_all_zero_not_nan() {
        let m = ConfusionMatrix::new(3);
        assert_eq!(m.accuracy(), 0.0);
        assert_eq!(
            m.scores(1),
            ClassScores {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                support: 0
            }
        );
        assert_eq!(m.macro_avg().f1, 0.0);
        assert_eq!(m.weighted_avg().precision, 0.0);
    }

    #[test]
    fn csv_has_header_and_one_row_per_true_class() {
        let m = example();
        let text = String::from_utf8(m.to_csv(&names()).unwrap()).unwrap();
        assert_eq!(
            text,
            "true\\pred,a,b,c,d\na,4,1,0,1\nb,2,3,0,0\nc,0,2,0,0\nd,0,0,0,0\n"
        );
        // A name with a comma is quoted, so the file still has 5 columns per row.
        let mut odd = names();
        odd[2] = "c, the third".into();
        let text = String::from_utf8(m.to_csv(&odd).unwrap()).unwrap();
        assert!(text.contains("\"c, the third\",0,2,0,0\n"), "{text}");
        assert!(m.to_csv(&names()[..3]).is_err());
    }

    #[test]
    fn csv_is_written_atomically_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.csv");
        std::fs::write(&path, "old").unwrap();
        example().write_csv(&path, &names()).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("true\\pred,a,b,c,d\n")
        );
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary file left behind");
        let err = example()
            .write_csv(&dir.path().join("missing/cm.csv"), &names())
            .unwrap_err();
        assert!(format!("{err:#}").contains("missing/cm.csv"), "{err:#}");
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn add_rejects_bad_indices() {
        ConfusionMatrix::new(2).add(0, 2);
    }
}
