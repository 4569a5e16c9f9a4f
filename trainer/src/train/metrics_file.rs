//! `metrics.csv`: one row per epoch.

use super::checkpoint::EpochMetrics;
use anyhow::{Context, Result};
use petal_shared::fs::write_atomic;
use std::path::Path;

/// Rewrites `metrics.csv` from the run's rows (so a resumed run never duplicates a row). The
/// `csv` writer quotes what needs it: a stage named `warm,up` stays one column.
pub fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    for row in rows {
        csv.serialize(row)?;
    }
    let bytes = csv.into_inner().context("cannot finish metrics.csv")?;
    write_atomic(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::METRICS_FILE;

    /// `metrics.csv` reads back as the rows that were written, whatever a stage is called.
    #[test]
    fn metrics_csv_round_trips_a_stage_name_with_a_comma() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let rows = vec![
            EpochMetrics {
                epoch: 1,
                lr: 0.001,
                train_loss: 1.25,
                val_loss: f64::NAN,
                val_accuracy: 0.5,
                stage: "warm,up \"1\"".into(),
            },
            EpochMetrics {
                epoch: 2,
                lr: 5e-4,
                train_loss: 0.75,
                val_loss: 0.5,
                val_accuracy: 0.625,
                stage: "finetune".into(),
            },
        ];
        write_metrics(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("epoch,lr,train_loss,val_loss,val_accuracy,stage\n"),
            "{text}"
        );
        let back: Vec<EpochMetrics> = csv::Reader::from_path(&path)
            .unwrap()
            .deserialize()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], rows[1]);
        assert_eq!(back[0].stage, rows[0].stage);
        assert!(back[0].val_loss.is_nan());
    }
}
