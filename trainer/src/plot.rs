//! PNG charts: the confusion matrix of `petal eval` and the training curves of `petal train`.
//!
//! Drawn with plotters into an in-memory RGB buffer, encoded with the `image` crate and
//! written atomically. Text uses DejaVu Sans compiled into the binary (the `dejavu` crate),
//! registered with plotters' `ab_glyph` renderer: no fontconfig, no system fonts, so the same
//! pixels come out on a bare CI machine and on a desktop.

use crate::metrics::ConfusionMatrix;
use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform, register_font};
use std::path::Path;
use std::sync::Once;

/// Registers the embedded font under every family name plotters may ask for (its charts use
/// "sans-serif" by default); without this, any text fails with "font unavailable".
fn ensure_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        for family in ["sans-serif", "serif", "monospace"] {
            // The bytes are a valid TrueType file shipped by the crate; registration can only
            // fail on malformed data, which a test below would catch at once.
            if register_font(family, FontStyle::Normal, dejavu::sans::regular()).is_err() {
                log::error!("cannot register the embedded DejaVu Sans font");
            }
        }
    });
}

/// Draws `(width, height)` pixels with `draw`, then writes them to `path` as PNG.
fn render_png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    ensure_fonts();
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let img = image::RgbImage::from_raw(width, height, pixels)
        .context("plot buffer has the wrong size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("cannot encode PNG")?;
    petal_shared::fs::write_atomic(path, &png)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// plotters' errors borrow nothing but are not all `Send + Sync`; keep their message.
fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing failed: {e}")
}

/// Linear blend from white (share 0) to a dark blue (share 1), matplotlib's "Blues" ends.
fn heat(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let mix = |lo: f64, hi: f64| (lo + (hi - lo) * s).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

/// The confusion matrix as a heat map: rows are true classes, columns predictions, class names
/// on both axes and the count in each cell (when cells are big enough to hold it). A cell's
/// colour is its share of its row — the fraction of that true class's images — so a small
/// class's mistakes are as visible as a large one's.
pub fn confusion_matrix_png(path: &Path, classes: &[String], cm: &ConfusionMatrix) -> Result<()> {
    cm.check_names(classes)?;
    let n = cm.classes();
    if n == 0 {
        bail!("cannot draw a confusion matrix without classes");
    }
    let layout = MatrixLayout::new(classes, n);
    let title = format!(
        "Confusion matrix: {} images, accuracy {:.1}%",
        cm.total(),
        cm.accuracy() * 100.0
    );
    render_png(path, (layout.width, layout.height), |root| {
        root.draw(&Text::new(
            title.clone(),
            (layout.width as i32 / 2, layout.title_h as i32 / 2),
            centred(16.0),
        ))
        .map_err(plot_err)?;
        draw_cells(root, cm, &layout)?;
        draw_class_names(root, classes, &layout)?;
        let (x0, y0, grid) = (
            layout.left as i32,
            layout.title_h as i32,
            layout.grid as i32,
        );
        root.draw(&Text::new(
            "predicted",
            (
                x0 + grid / 2,
                layout.height as i32 - layout.axis_title as i32 / 2 - 2,
            ),
            centred(14.0),
        ))
        .map_err(plot_err)?;
        root.draw(&Text::new(
            "true",
            (layout.axis_title as i32 / 2, y0 + grid / 2),
            centred(14.0).transform(FontTransform::Rotate270),
        ))
        .map_err(plot_err)?;
        Ok(())
    })
}

/// Black text of `size` centred on its position.
fn centred(size: f64) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center))
}

/// Where the confusion matrix's parts go, measured before the canvas exists.
struct MatrixLayout {
    n: usize,
    /// Side of one cell; the grid is `n` cells square.
    cell: u32,
    grid: u32,
    label_px: u32,
    count_px: f64,
    show_counts: bool,
    /// Column names turned to read upwards (they do not fit their cell lying flat).
    rotate_columns: bool,
    title_h: u32,
    axis_title: u32,
    /// Left edge of the grid (after the row names).
    left: u32,
    width: u32,
    height: u32,
}

impl MatrixLayout {
    fn new(classes: &[String], n: usize) -> Self {
        // 5 classes → 72 px cells; 102 (Oxford flowers) → 14 px, names still legible.
        let cell = (720 / n as u32).clamp(14, 72);
        let label_px = if cell >= 24 { 14 } else { 10 };
        ensure_fonts();
        // Text widths come from the real font.
        let widest = classes
            .iter()
            .map(|c| text_width(c, label_px))
            .max()
            .unwrap_or(0);
        let rotate_columns = widest + 4 > cell;
        let (title_h, axis_title) = (40, 24);
        let left = axis_title + widest + 10;
        let bottom = axis_title + 10 + if rotate_columns { widest } else { label_px };
        let grid = cell * n as u32;
        MatrixLayout {
            n,
            cell,
            grid,
            label_px,
            count_px: (f64::from(cell) * 0.32).clamp(10.0, 18.0),
            show_counts: cell >= 28,
            rotate_columns,
            title_h,
            axis_title,
            left,
            width: (left + grid + 20).max(320),
            height: title_h + grid + bottom,
        }
    }
}

/// One cell per (true, predicted) pair, shaded by its share of the true class, with the count
/// when the cells are large enough; a frame around the grid.
fn draw_cells(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    cm: &ConfusionMatrix,
    l: &MatrixLayout,
) -> Result<()> {
    let (x0, y0, c) = (l.left as i32, l.title_h as i32, l.cell as i32);
    for t in 0..l.n {
        let support = cm.support(t);
        for p in 0..l.n {
            let count = cm.count(t, p);
            let share = if support == 0 {
                0.0
            } else {
                count as f64 / support as f64
            };
            let (x, y) = (x0 + p as i32 * c, y0 + t as i32 * c);
            root.draw(&Rectangle::new(
                [(x, y), (x + c, y + c)],
                heat(share).filled(),
            ))
            .map_err(plot_err)?;
            if l.show_counts {
                let ink = if share > 0.55 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    count.to_string(),
                    (x + c / 2, y + c / 2),
                    centred(l.count_px).color(&ink),
                ))
                .map_err(plot_err)?;
            }
        }
    }
    // Grid frame, so white (zero) cells at the border still read as cells.
    let grid = l.grid as i32;
    root.draw(&Rectangle::new(
        [(x0, y0), (x0 + grid, y0 + grid)],
        BLACK.stroke_width(1),
    ))
    .map_err(plot_err)?;
    Ok(())
}

/// Row names right-aligned against the grid, column names below it (flat or turned).
fn draw_class_names(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    classes: &[String],
    l: &MatrixLayout,
) -> Result<()> {
    let label_font = ("sans-serif", l.label_px).into_font();
    let (x0, y0, c) = (l.left as i32, l.title_h as i32, l.cell as i32);
    let below = y0 + l.grid as i32 + 6;
    for (i, name) in classes.iter().enumerate() {
        let mid = i as i32 * c + c / 2;
        root.draw(&Text::new(
            name.clone(),
            (x0 - 6, y0 + mid),
            label_font
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(plot_err)?;
        let style = if l.rotate_columns {
            label_font
                .transform(FontTransform::Rotate270)
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center))
        } else {
            label_font
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top))
        };
        root.draw(&Text::new(name.clone(), (x0 + mid, below), style))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Width in pixels of `text` in the embedded font at `size` px.
fn text_width(text: &str, size: u32) -> u32 {
    let font = ("sans-serif", size).into_font();
    font.box_size(text)
        .map_or(text.len() as u32 * size, |(w, _)| w)
}

/// The stretches of consecutive present points: a line runs through each, so a missing value
/// (empty cell, NaN) shows as a gap rather than a bridge between its neighbours.
fn runs(points: &[Option<(f64, f64)>]) -> Vec<Vec<(f64, f64)>> {
    points
        .split(Option::is_none)
        .filter(|run| !run.is_empty())
        .map(|run| run.iter().flatten().copied().collect())
        .collect()
}

/// Line colours of the training curves (train loss, validation loss, validation accuracy):
/// public so tests can find each line in the PNG.
pub const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
pub const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);
pub const ACC_COLOUR: RGBColor = RGBColor(44, 160, 44);

/// Size of the training-curves image.
pub const CURVES_SIZE: (u32, u32) = (1000, 420);

/// One epoch on the training curves (a row of a run's `metrics.csv`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// Plots training and validation loss (left) and validation accuracy (right) against the epoch
/// from the run's rows, into `png`. Non-finite values (a diverged
/// loss, an accuracy of an empty validation set) are left out of the lines; points are drawn
/// too, so a one-epoch run still shows.
pub fn training_curves_png(rows: &[EpochPoint], png: &Path) -> Result<()> {
    if rows.is_empty() {
        bail!("no epochs to plot");
    }
    let at = |r: &EpochPoint| r.epoch as f64;
    let first = rows.iter().map(at).fold(f64::INFINITY, f64::min);
    let last = rows.iter().map(at).fold(f64::NEG_INFINITY, f64::max);
    let epochs = (first - 0.5)..(last + 0.5);
    let series = |f: fn(&EpochPoint) -> f64| -> Vec<Option<(f64, f64)>> {
        rows.iter()
            .map(|r| Some(f(r)).filter(|v| v.is_finite()).map(|v| (at(r), v)))
            .collect()
    };
    let train = series(|r| r.train_loss);
    let val = series(|r| r.val_loss);
    let acc = series(|r| r.val_accuracy);
    let max_loss = train
        .iter()
        .chain(&val)
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max);
    let loss_top = if max_loss > 0.0 { max_loss * 1.1 } else { 1.0 };
    // The trainer logs accuracy as a fraction; a log in percent still fits its axis.
    let acc_top = if acc.iter().flatten().any(|p| p.1 > 1.0) {
        100.0
    } else {
        1.0
    };
    let epoch_label = |e: &f64| format!("{e:.0}");
    let n_epochs = rows.len();

    render_png(png, CURVES_SIZE, |root| {
        let panels = root.split_evenly((1, 2));
        let mut loss = ChartBuilder::on(&panels[0])
            .caption("Loss", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(epochs.clone(), 0.0..loss_top)
            .map_err(plot_err)?;
        loss.configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .x_labels(n_epochs.min(10))
            .x_label_formatter(&epoch_label)
            .draw()
            .map_err(plot_err)?;
        for (points, colour, name) in [(&train, TRAIN_COLOUR, "train"), (&val, VAL_COLOUR, "val")] {
            for line in runs(points) {
                loss.draw_series(LineSeries::new(line, colour.stroke_width(2)))
                    .map_err(plot_err)?;
            }
            // An empty series carries the legend entry, however many pieces the line has.
            loss.draw_series(LineSeries::new(std::iter::empty(), colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            loss.draw_series(
                points
                    .iter()
                    .flatten()
                    .map(|&p| Circle::new(p, 3, colour.filled())),
            )
            .map_err(plot_err)?;
        }
        loss.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;

        let mut accuracy = ChartBuilder::on(&panels[1])
            .caption("Validation accuracy", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(epochs.clone(), 0.0..acc_top)
            .map_err(plot_err)?;
        let percent = move |v: &f64| format!("{:.0}%", v / acc_top * 100.0);
        accuracy
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy")
            .x_labels(n_epochs.min(10))
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&percent)
            .draw()
            .map_err(plot_err)?;
        for line in runs(&acc) {
            accuracy
                .draw_series(LineSeries::new(line, ACC_COLOUR.stroke_width(2)))
                .map_err(plot_err)?;
        }
        accuracy
            .draw_series(
                acc.iter()
                    .flatten()
                    .map(|&p| Circle::new(p, 3, ACC_COLOUR.filled())),
            )
            .map_err(plot_err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Decodes a PNG and returns its size and number of distinct colours.
    fn inspect(path: &Path) -> ((u32, u32), usize) {
        let img = image::open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        (img.dimensions(), colours.len())
    }

    /// Pixels darker than mid-grey in a region: where text (or lines) was drawn.
    fn dark_pixels(path: &Path, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
        let img = image::open(path).unwrap().to_rgb8();
        let mut n = 0;
        for yy in y {
            for xx in x.clone() {
                let p = img.get_pixel(xx, yy).0;
                if p.iter().map(|&v| u32::from(v)).sum::<u32>() < 3 * 100 {
                    n += 1;
                }
            }
        }
        n
    }

    fn names(n: usize) -> Vec<String> {
        let base = ["daisy", "dandelion", "rose", "sunflower", "tulip"];
        (0..n)
            .map(|i| base[i % 5].to_string() + &"x".repeat(i / 5))
            .collect()
    }

    #[test]
    fn confusion_png_has_cells_counts_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let mut cm = ConfusionMatrix::new(5);
        for t in 0..5 {
            for p in 0..5 {
                for _ in 0..(if t == p { 9 } else { (t + p) % 3 }) {
                    cm.add(t, p);
                }
            }
        }
        confusion_matrix_png(&path, &names(5), &cm).unwrap();
        let ((w, h), colours) = inspect(&path);
        assert!(
            (320..=1200).contains(&w) && (360..=1200).contains(&h),
            "{w}×{h}"
        );
        // Several heat levels plus antialiased text: far more than a blank canvas's one.
        assert!(colours > 20, "{colours} colours");
        // Row labels were rendered with the embedded font: dark pixels left of the grid.
        assert!(dark_pixels(&path, 0..80, 40..400) > 100);
        // The title too.
        assert!(dark_pixels(&path, 0..w, 0..36) > 100);
    }

    #[test]
    fn confusion_png_scales_to_many_classes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let mut cm = ConfusionMatrix::new(102);
        for c in 0..102 {
            cm.add(c, c);
            cm.add(c, (c + 1) % 102);
        }
        confusion_matrix_png(&path, &names(102), &cm).unwrap();
        let ((w, h), colours) = inspect(&path);
        assert!(
            w >= 102 * 14 && h >= 102 * 14 && w < 2500 && h < 2500,
            "{w}×{h}"
        );
        assert!(colours > 5);
        let err = confusion_matrix_png(&path, &names(3), &cm).unwrap_err();
        assert!(err.to_string().contains("3 class names"), "{err}");
    }

    fn rows(values: &[(usize, f64, f64, f64)]) -> Vec<EpochPoint> {
        values
            .iter()
            .map(|&(epoch, train_loss, val_loss, val_accuracy)| EpochPoint {
                epoch,
                train_loss,
                val_loss,
                val_accuracy,
            })
            .collect()
    }

    #[test]
    fn curves_png_draws_every_series_and_skips_non_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("curves.png");
        let rows = rows(&[
            (1, 1.61, 1.50, 0.30),
            (2, 1.20, 1.10, 0.55),
            (3, 0.90, f64::NAN, 0.70),
            (4, 0.70, 0.85, f64::INFINITY),
        ]);
        training_curves_png(&rows, &png).unwrap();
        let (size, colours) = inspect(&png);
        assert_eq!(size, CURVES_SIZE);
        assert!(colours > 20, "{colours} colours");
        // All three series' colours are present (not just axes and text).
        let img = image::open(&png).unwrap().to_rgb8();
        for c in [TRAIN_COLOUR, VAL_COLOUR, ACC_COLOUR] {
            assert!(
                img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count() > 50,
                "no line in {c:?}"
            );
        }
    }

    #[test]
    fn lines_break_at_missing_values() {
        let p = |e: f64| Some((e, e * 2.0));
        assert_eq!(
            runs(&[p(1.0), p(2.0), None, p(4.0), None, None]),
            vec![vec![(1.0, 2.0), (2.0, 4.0)], vec![(4.0, 8.0)]]
        );
        assert!(runs(&[None]).is_empty());
    }

    #[test]
    fn curves_png_single_epoch_and_no_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("curves.png");
        training_curves_png(&rows(&[(1, 1.6, 1.5, 0.3)]), &png).unwrap();
        assert_eq!(inspect(&png).0, CURVES_SIZE);
        std::fs::remove_file(&png).unwrap();
        let err = training_curves_png(&[], &png).unwrap_err();
        assert!(err.to_string().contains("no epochs"), "{err}");
        assert!(!png.exists(), "no PNG without epochs");
    }
}
