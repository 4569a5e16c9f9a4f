//! A procedurally drawn five-class "flowers" set, for the offline demo and the tests: each
//! class has its own petal count, shape and colours; position, size, rotation, colour and the
//! background vary per image, so a network has to learn shapes and colours, not pixels.

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::f32::consts::PI;
use std::path::Path;

/// The five classes of the Kaggle / TensorFlow flower sets, in sorted order.
pub const CLASSES: [&str; 5] = ["daisy", "dandelion", "rose", "sunflower", "tulip"];

fn jitter(rng: &mut StdRng, c: [f32; 3], amount: f32) -> [f32; 3] {
    c.map(|v| (v + rng.random_range(-amount..=amount)).clamp(0.0, 255.0))
}

/// Draws one flower of class `label` on a `width × height` canvas.
pub fn draw(label: usize, width: u32, height: u32, rng: &mut StdRng) -> RgbImage {
    let ground = jitter(rng, [70.0, 120.0, 60.0], 40.0);
    let sky = jitter(rng, [120.0, 160.0, 200.0], 50.0);
    let (w, h) = (width as f32, height as f32);
    let size = w.min(h) * rng.random_range(0.28..0.42);
    let cx = w / 2.0 + rng.random_range(-0.15..0.15) * w;
    let cy = h / 2.0 + rng.random_range(-0.15..0.15) * h;
    let turn = rng.random_range(0.0..2.0 * PI);
    let (petals, petal_rgb, centre_rgb, centre_frac) = match label {
        0 => (
            rng.random_range(11..17),
            [245.0, 245.0, 240.0],
            [240.0, 200.0, 30.0],
            0.25,
        ),
        1 => (
            rng.random_range(34..44),
            [250.0, 215.0, 40.0],
            [235.0, 180.0, 20.0],
            0.2,
        ),
        2 => (5, [200.0, 25.0, 45.0], [140.0, 10.0, 30.0], 0.0),
        3 => (
            rng.random_range(17..23),
            [250.0, 190.0, 20.0],
            [90.0, 50.0, 20.0],
            0.45,
        ),
        _ => (3, [230.0, 70.0, 130.0], [230.0, 70.0, 130.0], 0.0),
    };
    let petal_rgb = jitter(rng, petal_rgb, 20.0);
    let centre_rgb = jitter(rng, centre_rgb, 15.0);
    let noise_seed: u32 = rng.random();
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let t = fy / h;
        let mut c = [0.0f32; 3];
        for i in 0..3 {
            c[i] = sky[i] * (1.0 - t) + ground[i] * t;
        }
        // Stem.
        if (fx - cx).abs() < size * 0.06 && fy > cy {
            c = [40.0, 110.0, 40.0];
        }
        let (dx, dy) = (fx - cx, fy - cy);
        let r = (dx * dx + dy * dy).sqrt() / size;
        let theta = dy.atan2(dx) + turn;
        let inside = match label {
            // Rose: a round bloom with a spiral of darker petal edges.
            2 => r < 0.9,
            // Tulip: a cup, wider at the top with three tips, upright (no rotation).
            4 => {
                let (u, v) = (dx / size, dy / size);
                let tips = 0.15 * (3.0 * (u * 3.5).cos()).abs();
                v > -0.55 - tips
                    && v < 0.6
                    && u.abs() < 0.55 * (1.0 - (v - 0.6).powi(2) / 2.5).max(0.0) + 0.1
            }
            _ => {
                r < 0.35
                    + 0.65
                        * (petals as f32 * theta / 2.0)
                            .cos()
                            .abs()
                            .powf(if label == 1 { 0.3 } else { 2.0 })
            }
        };
        if inside {
            c = petal_rgb;
            if label == 2 {
                let swirl = ((r * 14.0 + theta * 1.0).sin() * 0.5 + 0.5) * 0.45;
                c = c.map(|v| v * (1.0 - swirl));
            }
            if r < centre_frac {
                c = centre_rgb;
            }
        }
        // Sensor-like noise, deterministic per pixel.
        let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ noise_seed) % 21;
        let n = n as f32 - 10.0;
        Rgb(c.map(|v| (v + n).clamp(0.0, 255.0) as u8))
    })
}

/// Writes `per_class` labelled images per class under `dir/<class>/`, and `test_per_class`
/// unlabelled ones under `test_dir/` with their answers in `test_dir/../test_labels.csv`.
pub fn write_dataset(
    dir: &Path,
    test_dir: &Path,
    per_class: usize,
    test_per_class: usize,
    seed: u64,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    std::fs::create_dir_all(test_dir)
        .with_context(|| format!("cannot create {}", test_dir.display()))?;
    let mut answers = String::from("file,label\n");
    for (label, class) in CLASSES.iter().enumerate() {
        let class_dir = dir.join(class);
        std::fs::create_dir_all(&class_dir)
            .with_context(|| format!("cannot create {}", class_dir.display()))?;
        for i in 0..per_class + test_per_class {
            let (w, h) = (rng.random_range(96..=128), rng.random_range(80..=112));
            let img = draw(label, w, h, &mut rng);
            let path = if i < per_class {
                class_dir.join(format!("{class}_{i:04}.png"))
            } else {
                let name = format!("img_{:04}.png", (i - per_class) * CLASSES.len() + label);
                answers.push_str(&format!("{name},{class}\n"));
                test_dir.join(name)
            };
            img.save(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    let labels = test_dir.parent().unwrap_or(dir).join("test_labels.csv");
    std::fs::write(&labels, answers)
        .with_context(|| format!("cannot write {}", labels.display()))?;
    Ok(())
}
