#!/usr/bin/env python3
"""One training epoch on the CPU, petal against PyTorch, on the same photos (scripts/bench-cpu
--train). Two workloads:

  quickstart  the quick start's run: ResNet-18 from scratch at 64 px, batch 16, every layer
              trained with Adam, on the photos `petal demo --generate-only` writes (320 of
              them train);
  finetune    ResNet-50 fine-tuned at 224 from (seeded) torchvision weights, everything but
              conv1/bn1 trained with Adam, batch 16, on generated 500x375 JPEGs.

Both sides train on the same files with the recipe's augmentation (torchvision's
RandomRotation(30), RandomResizedCrop, RandomHorizontalFlip, ImageNet normalisation) and report
the epoch's images per second, loading included. PyTorch runs as its users run it on a CPU:
ImageFolder + DataLoader (shuffle, each --workers setting tried, the best kept), all cores for
its kernels. Each tool runs --runs times, alternating; the median is reported. Figures only.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def torch_epoch(args, data_dir, files, arch, size, pretrained, workers):
    """PyTorch's epoch over `files` (paths under `data_dir`): images per second."""
    import torch
    import torchvision
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.RandomRotation(30),
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    full = torchvision.datasets.ImageFolder(data_dir, tf)
    keep = {os.path.join(data_dir, f) for f in files}
    indices = [i for i, (p, _) in enumerate(full.samples) if p in keep]
    data = torch.utils.data.Subset(full, indices)
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, shuffle=True, num_workers=workers, drop_last=False
    )
    model = getattr(torchvision.models, arch)(num_classes=len(full.classes))
    if pretrained:
        state = torch.load(pretrained, map_location="cpu")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        model.load_state_dict(state, strict=False)
        for name, p in model.named_parameters():
            p.requires_grad = not name.startswith(("conv1.", "bn1."))
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    if pretrained:
        model.conv1.eval()
        model.bn1.eval()
    start = time.perf_counter()
    seen = 0
    for x, y in loader:
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optim.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def petal_epoch(petal, work, data_dir, arch, size, resize, pretrained, batch):
    """petal's epoch: `petal train` for one epoch; the images per second its epoch line reports."""
    out = os.path.join(work, "petal-run")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [petal, "train", "--data", data_dir, "--arch", arch, "--image-size", str(size)]
    cmd += ["--resize", str(resize), "--batch-size", str(batch), "--device", "cpu", "-o", out]
    cmd += ["--epochs", "1", "--precision", "f32"]
    if pretrained:
        cmd += ["--pretrained", pretrained, "--stage-epochs", "head=0", "--stage-epochs", "polish=0"]
    else:
        cmd += ["--stage-epochs", "polish=0"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"petal train failed:\n{run.stderr}")
    rates = re.findall(r"epoch 1 \([^)]*\):.*?([0-9.]+) img/s", run.stderr)
    if not rates:
        sys.exit(f"no epoch line in:\n{run.stderr}")
    with open(os.path.join(out, "split.json")) as f:
        train = json.load(f)["train"]
    return float(rates[-1]), train


def prepare(args, workload, work):
    """The photos (and weights) of a workload: (data folder, arch, size, resize, weights)."""
    if workload == "quickstart":
        data = os.path.join(work, "demo", "data")
        if not os.path.isdir(data):
            subprocess.run(
                [args.petal, "demo", "--out", os.path.join(work, "demo"), "--generate-only"],
                check=True,
                capture_output=True,
            )
        return data, "resnet18", 64, 73, None
    data = os.path.join(work, "jpegs")
    if not os.path.isdir(data):
        subprocess.run(
            [sys.executable, os.path.join(HERE, "make_photos.py"), "--out", data, "--count", str(args.photos)],
            check=True,
        )
    weights = os.path.join(work, "ref", "resnet50.pth")
    if not os.path.exists(weights):
        os.makedirs(os.path.dirname(weights), exist_ok=True)
        subprocess.run(
            [
                args.torchvision_python,
                os.path.join(REPO, "tests", "reference", "torchvision_ref.py"),
                "--out",
                os.path.dirname(weights),
                "--size",
                "64",
                "resnet50",
            ],
            check=True,
            capture_output=True,
        )
    return data, "resnet50", 224, 256, weights


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--petal", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--workloads", nargs="+", default=["quickstart", "finetune"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--photos", type=int, default=120, help="JPEGs of the finetune workload")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--torchvision-python", default="/usr/bin/python3", help="writes the weights")
    args = ap.parse_args()
    import torch

    os.makedirs(args.work, exist_ok=True)
    for workload in args.workloads:
        data, arch, size, resize, weights = prepare(args, workload, args.work)
        petal, torch_best = [], []
        for _ in range(args.runs):
            rate, train = petal_epoch(args.petal, args.work, data, arch, size, resize, weights, args.batch_size)
            petal.append(rate)
            by_workers = {w: torch_epoch(args, data, train, arch, size, weights, w) for w in args.workers}
            best = max(by_workers, key=by_workers.get)
            torch_best.append((by_workers[best], best))
        p = statistics.median(petal)
        t, w = sorted(torch_best)[len(torch_best) // 2]
        print(
            f"{workload}: {arch} at {size}, batch {args.batch_size}, {len(train)} photos, median of "
            f"{args.runs}: petal {p:.1f} img/s, PyTorch {torch.__version__} {t:.1f} img/s "
            f"(DataLoader {w} workers, {torch.get_num_threads()} threads) -> {p / t:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
