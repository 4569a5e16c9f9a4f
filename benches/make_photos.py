#!/usr/bin/env python3
"""Generated stand-ins for flower photos, for benchmarks on machines without the dataset:
500x375 JPEGs (quality 90, the size of a typical flower_photos image), smooth colour fields with
fine noise so that they decode and compress like photos rather than like flat colour.

    python3 benches/make_photos.py --out DIR --count 3670        # DIR/<class>/NNNN.jpg, 5 classes
    python3 benches/make_photos.py --out DIR --count 64 --flat   # DIR/NNNN.jpg
"""
import argparse
import os

import numpy as np
from PIL import Image

CLASSES = ["daisy", "dandelion", "rose", "sunflower", "tulip"]


def photo(rng, label):
    coarse = rng.random((6, 8, 3)) * 0.6 + 0.2
    coarse[..., label % 3] += 0.2
    img = Image.fromarray((np.clip(coarse, 0, 1) * 255).astype(np.uint8)).resize(
        (500, 375), Image.BICUBIC
    )
    noisy = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=3670)
    p.add_argument("--flat", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        label = i % len(CLASSES)
        folder = args.out if args.flat else os.path.join(args.out, CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        photo(rng, label).save(os.path.join(folder, f"{i:04d}.jpg"), quality=90)


if __name__ == "__main__":
    main()
