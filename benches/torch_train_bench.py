#!/usr/bin/env python3
"""Training-step throughput of torchvision's ResNet with PyTorch: the reference for
`petal train`'s img/s figures on the same machine.

Runs the recipe's fine-tuning step (everything but conv1/bn1 trainable, Adam, cross-entropy,
fp32) on random 224x224 batches and prints images per second.

    python3 benches/torch_train_bench.py --arch resnet101 --batch-size 32 --steps 30
"""

import argparse
import time

import torch
import torchvision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet101")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--classes", type=int, default=5)
    args = p.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = getattr(torchvision.models, args.arch)(num_classes=args.classes).to(device)
    for name, param in model.named_parameters():
        param.requires_grad = not name.startswith(("conv1.", "bn1."))
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    model.train()

    def step():
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optim.step()
        return loss

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss.item()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(
        f"torch {torch.__version__} {args.arch} train on {device}"
        f" ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}):"
        f" batch {args.batch_size} at {args.image_size}:"
        f" {args.steps * args.batch_size / elapsed:.1f} img/s"
    )


if __name__ == "__main__":
    main()
