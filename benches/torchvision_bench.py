#!/usr/bin/env python3
"""torchvision's side of Petal's CPU benchmarks (run by trainer/benches/inference.rs).

  --arch resnet50 --batch 8   prints "ARCH BATCH images_per_s peak_MiB" for eval-mode forwards
  --preprocess [--photo P]    prints images/s of Pillow decode + Resize(256) + CenterCrop(224)
                              + ToTensor + Normalize on the 640x427 reference JPEG (or P)
"""
import argparse
import os
import resource
import statistics
import time

import torch
import torchvision
from torchvision import transforms as T
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(f, min_iters, budget):
    f()
    samples, start = [], time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - start < budget:
        t = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--preprocess", action="store_true")
    ap.add_argument("--photo", default=os.path.join(HERE, "../../shared/fixtures/photos/sk_china.jpg"))
    args = ap.parse_args()

    if args.preprocess:
        path = args.photo
        tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        secs = timed(lambda: tf(Image.open(path).convert("RGB")), 10, 2 if args.quick else 5)
        print(f"{1 / secs:.1f}")
        return

    model = getattr(torchvision.models, args.arch)().eval()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.no_grad():
        secs = timed(lambda: model(x), 3, 3 if args.quick else 10)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.arch} {args.batch} {args.batch / secs:.2f} {peak:.0f}")


if __name__ == "__main__":
    main()
