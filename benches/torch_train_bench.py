#!/usr/bin/env python3
"""PyTorch's side of Petal's GPU benchmark (scripts/bench-gpu): the same training step and the
same inference batches as trainer/benches/training.rs, with PyTorch at its best.

Training: the recipe's fine-tuning step (everything but conv1/bn1 trainable, Adam,
cross-entropy) on random batches, in PyTorch's default mode ("eager": fp32 tensors, cuDNN
convolutions allowed to use TF32 tensor cores, as PyTorch ships) and with automatic mixed
precision ("amp": torch.autocast f16 + GradScaler). Inference: eval-mode forwards of batch
--infer-batch, logits copied back to the host as `petal score` does, default mode and autocast.

Prints one JSON object per measurement (images/s steady state after warm-up, the first step's
seconds apart, peak allocated GPU memory).

    python3 benches/torch_train_bench.py --arch resnet18,resnet101 --batch-size 32 --steps 30
"""

import argparse
import contextlib
import json
import sys
import time

import torch
import torchvision


def timed(step, warmup, steps, sync):
    t = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t
    for _ in range(warmup):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return first, time.perf_counter() - t


def autocast(device, amp):
    # Built only when wanted: some PyTorch versions reject an f16 CPU autocast even disabled.
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.float16)


def train(arch, mode, args, device, sync):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=args.classes).to(device)
    for name, param in model.named_parameters():
        param.requires_grad = not name.startswith(("conv1.", "bn1."))
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    model.train()
    amp = mode == "amp"
    scaler = torch.cuda.amp.GradScaler(enabled=amp and device == "cuda")

    def step():
        optim.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()

    return timed(step, args.warmup, args.steps, sync), args.batch_size


def infer(arch, mode, args, device, sync, batch=None):
    """Eval-mode forward passes of `batch` images (default --infer-batch), logits read back
    to the host each time (as a scoring or predicting program must)."""
    batch = batch or args.infer_batch
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=args.classes).to(device).eval()
    x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
    amp = mode == "amp"

    def step():
        with torch.inference_mode(), autocast(device, amp):
            model(x).float().cpu()

    return timed(step, args.warmup, args.steps, sync), batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18,resnet101")
    p.add_argument("--modes", default="eager,amp")
    p.add_argument("--what", default="train,infer", help="train, infer (--infer-batch), latency (batch 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--infer-batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--classes", type=int, default=5)
    args = p.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    # PyTorch at its best in f32: TF32 tensor cores for convolutions (its default) and for
    # matrix products (not its default), stated so the table says what "eager" means.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    tf32 = f"cudnn tf32 {torch.backends.cudnn.allow_tf32}, matmul tf32 {torch.backends.cuda.matmul.allow_tf32}"
    torch.backends.cudnn.benchmark = True
    for arch in args.arch.split(","):
        for what in args.what.split(","):
            for mode in args.modes.split(","):
                if mode == "amp" and not cuda:
                    print(f"{arch} {what}: AMP (f16 autocast) needs CUDA; skipped", file=sys.stderr)
                    continue
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                if what == "train":
                    (first, elapsed), batch = train(arch, mode, args, device, sync)
                elif what == "latency":
                    (first, elapsed), batch = infer(arch, mode, args, device, sync, batch=1)
                else:
                    (first, elapsed), batch = infer(arch, mode, args, device, sync)
                print(
                    json.dumps(
                        {
                            "tool": f"torch {torch.__version__}",
                            "what": what,
                            "arch": arch,
                            "precision": mode,
                            "batch": batch,
                            "images_per_s": args.steps * batch / elapsed,
                            "first_step_s": first,
                            "device_bytes": torch.cuda.max_memory_allocated() if cuda else None,
                            "device": f"{name} ({tf32}, cudnn.benchmark)",
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
