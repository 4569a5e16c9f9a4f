//! The batch table's "download CSV": the same bytes as `petal score` for the same files.

/// The CSV `petal score` writes for the same files: header `file,label,prob`, one row per
/// readable image in path order, probability with six decimals. `rows` is a JSON array of
/// `[file, label, prob]`; failed files are left out, as `petal score` leaves them out.
pub fn score_csv(rows_json: &str) -> Result<String, String> {
    let mut rows: Vec<(String, String, f32)> =
        serde_json::from_str(rows_json).map_err(|e| e.to_string())?;
    rows.sort_by(|a, b| path_key(&a.0).cmp(&path_key(&b.0)));
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(["file", "label", "prob"])
        .map_err(|e| e.to_string())?;
    for (file, label, prob) in rows {
        csv.write_record([file, label, format!("{prob:.6}")])
            .map_err(|e| e.to_string())?;
    }
    let bytes = csv.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// Sort key equal to `PathBuf`'s ordering (component by component), which `petal score` uses.
fn path_key(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
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
