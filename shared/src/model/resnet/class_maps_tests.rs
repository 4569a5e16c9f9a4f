//! The class maps of a ResNet whose evidence is known in advance: a hand-set ResNet-18 that
//! sees red, on photos with a red square, through the folded CPU network and burn's alike.

use super::ResNetConfig;
use crate::Preprocessor;
use crate::cam::{CamError, ClassMap, CropGeometry, class_maps_from_data};
use crate::model::{Arch, Block, FoldedResNet, Network};
use burn::module::Param;
use burn::prelude::*;
use image::{Rgb, RgbImage};

/// A ResNet-18 that sees red: the stem's channel 0 is `R − (G + B)/2` of the centre tap
/// (ReLU keeps only red-ish pixels), every residual branch is zero so each block passes its
/// input on (the first block of a stage subsamples it with a 1×1 stride-2 identity
/// shortcut), and the head's class 0 ("red") reads channel 0, class 1 reads its negative.
/// The network's evidence for "red" is where the red is — known in advance.
fn red_detector(device: &Device) -> super::ResNet {
    let mut model = ResNetConfig::new(Arch::ResNet18, 2).init(device);
    let zeros = |t: &Param<Tensor<4>>| Param::from_tensor(Tensor::zeros(t.dims(), device));
    let mut stem = vec![0.0f32; 64 * 3 * 7 * 7];
    for (c, w) in [1.0, -0.5, -0.5].into_iter().enumerate() {
        stem[(c * 7 + 3) * 7 + 3] = w; // output channel 0, input channel c, centre tap
    }
    model.conv1.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(stem, [64, 3, 7, 7]),
        device,
    ));
    for block in [
        &mut model.layer1,
        &mut model.layer2,
        &mut model.layer3,
        &mut model.layer4,
    ]
    .into_iter()
    .flatten()
    {
        let Block::Basic(b) = block else {
            unreachable!("ResNet-18 has basic blocks")
        };
        b.conv1.weight = zeros(&b.conv1.weight);
        b.conv2.weight = zeros(&b.conv2.weight);
        if let Some(d) = &mut b.downsample {
            let [out, inp, _, _] = d.conv.weight.dims();
            let mut eye = vec![0.0f32; out * inp];
            (0..inp.min(out)).for_each(|c| eye[c * inp + c] = 1.0);
            d.conv.weight = Param::from_tensor(Tensor::from_data(
                TensorData::new(eye, [out, inp, 1, 1]),
                device,
            ));
        }
    }
    // The BatchNorms stay as initialised (γ = 1, β = 0, mean 0, variance 1): the identity
    // up to a factor 1/√(1 + ε).
    let mut head = vec![0.0f32; 512 * 2];
    head[0] = 1.0; // feature 0 → class 0
    head[1] = -1.0; // feature 0 → class 1
    model.fc.weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(head, [512, 2]), device));
    model.fc.bias = Some(Param::from_tensor(Tensor::zeros([2], device)));
    model
}

/// A grey `width × height` photo with a red square of side `side` at `(x, y)`.
fn photo_with_red_square(width: u32, height: u32, x: u32, y: u32, side: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |px, py| {
        if (x..x + side).contains(&px) && (y..y + side).contains(&py) {
            Rgb([230, 20, 20])
        } else {
            Rgb([128, 128, 128])
        }
    })
}

/// Where the projected map of class 0 peaks, in original-photo pixels.
fn peak(map: &ClassMap, g: &CropGeometry) -> (u32, u32) {
    let p = g.project(map, g.width, g.height);
    let (i, _) = p
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("a defined value");
    (i as u32 % g.width, i as u32 / g.width)
}

#[test]
fn the_map_peaks_where_the_class_evidence_is() {
    let device = Device::flex();
    let model = red_detector(&device);
    let folded = FoldedResNet::new(model.clone()).unwrap();
    let pre = Preprocessor::new(256, 224).unwrap();
    // 400×300: the crop is x ∈ [68.0, 330.8), y ∈ [18.75, 281.25) of the original; its
    // centre is (199.4, 150). One square per quadrant of the crop, one photo each.
    let cases = [
        ((85, 35), "top-left"),
        ((245, 35), "top-right"),
        ((85, 195), "bottom-left"),
        ((245, 195), "bottom-right"),
    ];
    for ((x, y), quadrant) in cases {
        let img = photo_with_red_square(400, 300, x, y, 70);
        let g = CropGeometry::new(img.width(), img.height(), &pre);
        let [l, t, r, b] = g.crop_in_original();
        let (cx, cy) = ((l + r) / 2.0, (t + b) / 2.0);
        let input = pre.tensor_from_image(&img);

        let (logits, maps) = folded.forward_with_class_maps(&input, 1, 224, 224);
        assert_eq!((maps.height, maps.width, maps.classes), (7, 7, 2));
        let red = maps.map(0, 0).unwrap();
        // The map's mean is the logit, and "red" wins.
        assert!((red.mean() - logits[0]).abs() < 1e-4, "{quadrant}");
        assert!(
            logits[0] > 0.0 && logits[0] > logits[1],
            "{quadrant}: {logits:?}"
        );

        // burn's own network gives the same map.
        let x4 = Tensor::<4>::from_data(TensorData::new(input, [1, 3, 224, 224]), &device);
        let burn = Network::ResNet(model.clone()).maps(x4);
        let (burn_logits, burn_maps) = (burn.logits, burn.cam);
        let burn_maps = class_maps_from_data(burn_maps.into_data()).unwrap();
        let burn_red = burn_maps.map(0, 0).unwrap();
        for (a, b) in red.values.iter().zip(&burn_red.values) {
            assert!((a - b).abs() < 1e-4, "{quadrant}: folded {a}, burn {b}");
        }
        let burn_logits = burn_logits.into_data().try_to_vec::<f32>().unwrap();
        assert!((burn_red.mean() - burn_logits[0]).abs() < 1e-4);

        // The peak, in the original photo, is in the square's quadrant of the crop and
        // within a grid cell (32 resized pixels, 37.5 original ones) of the square.
        let (px, py) = peak(&red, &g);
        let want_left = quadrant.ends_with("left");
        let want_top = quadrant.starts_with("top");
        assert_eq!(
            (f64::from(px) < cx, f64::from(py) < cy),
            (want_left, want_top),
            "{quadrant}: peak at ({px}, {py}), crop centre ({cx:.1}, {cy:.1})"
        );
        let near = |p: u32, lo: u32| p + 38 >= lo && p <= lo + 70 + 38;
        assert!(near(px, x) && near(py, y), "{quadrant}: peak ({px}, {py})");

        // Grad-CAM (folded and burn's, which agree) peaks there too.
        let grad = maps
            .grad_cam_of_linear_head(folded.head_bias())
            .map(0, 0)
            .unwrap();
        let burn_grad = class_maps_from_data(burn.grad_cam.into_data())
            .unwrap()
            .map(0, 0)
            .unwrap();
        for (a, b) in grad.values.iter().zip(&burn_grad.values) {
            assert!(
                (a - b).abs() < 1e-4,
                "{quadrant}: Grad-CAM folded {a}, burn {b}"
            );
        }
        let (gx, gy) = peak(&grad, &g);
        assert!(
            near(gx, x) && near(gy, y),
            "{quadrant}: Grad-CAM peak ({gx}, {gy})"
        );
    }
}

#[test]
fn a_photo_without_the_class_gives_a_flat_map() {
    let device = Device::flex();
    let folded = FoldedResNet::new(red_detector(&device)).unwrap();
    let pre = Preprocessor::new(256, 224).unwrap();
    let grey = RgbImage::from_pixel(320, 240, Rgb([128, 128, 128]));
    let (_, maps) = folded.forward_with_class_maps(&pre.tensor_from_image(&grey), 1, 224, 224);
    let red = maps.map(0, 0).unwrap();
    assert!(red.values.iter().all(|&v| v == 0.0), "{:?}", red.values);
    assert!(matches!(
        maps.map(0, 2),
        Err(CamError::NoSuchClass {
            class: 2,
            classes: 2
        })
    ));
}
