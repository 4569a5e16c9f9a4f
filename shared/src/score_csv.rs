//! `petal score`'s CSV (one row per classified image), written by the CLI and by the page's
//! "download CSV" with this one function, so the same files give the same bytes.

use crate::files::compare_paths;
use std::str::FromStr;

/// One classified image.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// Name relative to the searched folder ([`crate::files::relative`]).
    pub file: String,
    /// The most probable class.
    pub label: String,
    /// Its probability.
    pub prob: f32,
    /// Every class's probability, in the bundle's class order (written only with
    /// [`CsvLayout::class_columns`]).
    pub probs: Vec<f32>,
}

/// Header names of the file and class columns, e.g. `id,label` for a Kaggle submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub file: String,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            file: "file".into(),
            label: "label".into(),
        }
    }
}

impl FromStr for Columns {
    type Err = ScoreCsvError;
    /// Two names separated by a comma.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split(',').map(str::trim).collect::<Vec<_>>()[..] {
            [file, label] if !file.is_empty() && !label.is_empty() => Ok(Columns {
                file: file.into(),
                label: label.into(),
            }),
            _ => Err(ScoreCsvError::Columns(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreCsvError {
    #[error("expected two column names separated by a comma (e.g. id,label), got '{0}'")]
    Columns(String),
    #[error("row {file}: {got} class probabilities for {expected} class columns")]
    ProbCount {
        file: String,
        got: usize,
        expected: usize,
    },
    #[error("cannot write the CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// The CSV: header `file,label,prob` (renamed by `columns`) plus one column per class when
/// `class_columns` is given; rows sorted by [`compare_paths`]; probabilities with six decimals.
/// Unreadable files have no row.
pub fn score_csv(
    columns: &Columns,
    class_columns: Option<&[String]>,
    mut rows: Vec<ScoreRow>,
) -> Result<String, ScoreCsvError> {
    rows.sort_by(|a, b| compare_paths(&a.file, &b.file));
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec![columns.file.as_str(), columns.label.as_str(), "prob"];
    header.extend(class_columns.unwrap_or_default().iter().map(String::as_str));
    csv.write_record(&header)?;
    for row in rows {
        let mut record = vec![row.file.clone(), row.label, format!("{:.6}", row.prob)];
        if let Some(classes) = class_columns {
            if row.probs.len() != classes.len() {
                return Err(ScoreCsvError::ProbCount {
                    file: row.file,
                    got: row.probs.len(),
                    expected: classes.len(),
                });
            }
            record.extend(row.probs.iter().map(|p| format!("{p:.6}")));
        }
        csv.write_record(&record)?;
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| ScoreCsvError::Csv(e.into_error().into()))?;
    // The writer only ever received `String`s.
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(file: &str, label: &str, prob: f32, probs: &[f32]) -> ScoreRow {
        ScoreRow {
            file: file.into(),
            label: label.into(),
            prob,
            probs: probs.to_vec(),
        }
    }

    #[test]
    fn csv_sorts_like_paths_and_formats_six_decimals() {
        let csv = score_csv(
            &Columns::default(),
            None,
            vec![
                row("b.png", "rose", 0.5, &[]),
                row("a/z.jpg", "daisy", 0.123_456_79, &[]),
                row("a.b.png", "tulip", 1.0, &[]),
            ],
        )
        .unwrap();
        assert_eq!(
            csv,
            "file,label,prob\na/z.jpg,daisy,0.123457\na.b.png,tulip,1.000000\nb.png,rose,0.500000\n"
        );
    }

    #[test]
    fn custom_columns_class_probabilities_and_quoting() {
        let classes = vec!["a,b".to_string(), "c".to_string()];
        let columns: Columns = " id , label".parse().unwrap();
        let csv = score_csv(
            &columns,
            Some(&classes),
            vec![row("x \"1\".jpg", "c", 0.75, &[0.25, 0.75])],
        )
        .unwrap();
        assert_eq!(
            csv,
            "id,label,prob,\"a,b\",c\n\"x \"\"1\"\".jpg\",c,0.750000,0.250000,0.750000\n"
        );
        assert!(matches!(
            score_csv(&columns, Some(&classes), vec![row("y", "c", 1.0, &[1.0])]),
            Err(ScoreCsvError::ProbCount { .. })
        ));
        for bad in ["id", "id,label,x", ",label", ""] {
            assert!(bad.parse::<Columns>().is_err(), "{bad}");
        }
    }
}
