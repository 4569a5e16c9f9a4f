#!/usr/bin/env python3
"""One training epoch the way a PyTorch user writes it, for scripts/bench-gpu: torchvision
ImageFolder with the recipe's augmentation (RandomRotation(30), RandomResizedCrop(224),
RandomHorizontalFlip, ImageNet normalisation), DataLoader with --workers processes and pinned
memory, ResNet-101 with everything but conv1/bn1 trainable, Adam, AMP. Prints one JSON object
with the epoch's images per second (loading included), to set beside the img/s `petal train`
reports for its epoch.
"""
import argparse
import json
import time

import torch
import torchvision
from torchvision import transforms as T


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--arch", default="resnet101")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    tf = T.Compose(
        [
            T.RandomRotation(30),
            T.RandomResizedCrop(224),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    data = torchvision.datasets.ImageFolder(args.data, tf)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=True,
        persistent_workers=False,
    )
    model = getattr(torchvision.models, args.arch)(num_classes=len(data.classes)).cuda()
    for name, param in model.named_parameters():
        param.requires_grad = not name.startswith(("conv1.", "bn1."))
    optim = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    loss_fn = torch.nn.CrossEntropyLoss()
    torch.backends.cudnn.benchmark = True
    model.train()
    start = time.perf_counter()
    seen = 0
    for x, y in loader:
        x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
        optim.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
        seen += len(y)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "tool": f"torch {torch.__version__}",
                "what": "epoch",
                "arch": args.arch,
                "precision": "amp",
                "batch": args.batch_size,
                "images_per_s": seen / elapsed,
                "first_step_s": None,
                "device_bytes": torch.cuda.max_memory_allocated(),
                "device": f"{args.workers} DataLoader workers",
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
