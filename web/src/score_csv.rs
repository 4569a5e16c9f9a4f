//! The batch table's "download CSV": `petal-shared`'s [`score_csv`](petal_shared::score_csv),
//! so the same files give the same bytes as `petal score`.

use petal_shared::score_csv::{Columns, ScoreRow, score_csv as shared_score_csv};

/// `petal score`'s CSV (default columns, no per-class probabilities) for the page's rows: a
/// JSON array of `[file, label, prob]`. Failed files have no row, as in `petal score`; the
/// order is `petal score`'s whatever order the rows arrived in.
pub fn score_csv(rows_json: &str) -> Result<String, String> {
    let rows: Vec<(String, String, f32)> =
        serde_json::from_str(rows_json).map_err(|e| e.to_string())?;
    let rows = rows
        .into_iter()
        .map(|(file, label, prob)| ScoreRow {
            file,
            label,
            prob,
            probs: Vec::new(),
        })
        .collect();
    shared_score_csv(&Columns::default(), None, rows).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_sorts_like_paths_and_formats_six_decimals() {
        let csv = score_csv(
            r#"[["b.png","rose",0.5],["a/z.jpg","daisy",0.123456789],["a.b.png","tulip",1.0]]"#,
        )
        .unwrap();
        assert_eq!(
            csv,
            "file,label,prob\na/z.jpg,daisy,0.123457\na.b.png,tulip,1.000000\nb.png,rose,0.500000\n"
        );
    }
}
