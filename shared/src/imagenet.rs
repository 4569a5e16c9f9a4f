//! The ImageNet constants every consumer shares; nothing else in Petal repeats them.

/// Per-channel mean of ImageNet in RGB order, as torchvision's `Normalize` uses it.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of ImageNet in RGB order.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Side of the square network input (torchvision's `CenterCrop(224)`).
pub const CROP_SIZE: usize = 224;
/// Shorter side after resizing for torchvision's `IMAGENET1K_V1` weights.
pub const RESIZE_V1: usize = 256;
/// Shorter side after resizing for torchvision's `IMAGENET1K_V2` weights.
pub const RESIZE_V2: usize = 232;
