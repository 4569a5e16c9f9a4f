#!/usr/bin/env python3
"""The table of scripts/bench-gpu: reads the JSON lines petal's training benchmark and
benches/torch_train_bench.py printed and sets petal beside PyTorch, with ratios."""
import json
import sys


def gib(b):
    return f"{b / 2**30:.2f}" if b else "-"


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
    by = {}
    for r in rows:
        tool = f"petal {r.get('backend', 'wgpu')}" if r["tool"] == "petal" else "torch"
        by[(tool, r["what"], r["arch"], r["precision"])] = r
    devices = sorted({r["device"] for r in rows if r["what"] in ("train", "infer", "latency")})
    print("devices:", *devices, sep="\n  ")
    columns = [("wgpu f32", "petal wgpu", "f32"), ("wgpu f16", "petal wgpu", "f16"),
               ("CUDA f32", "petal cuda", "f32"), ("CUDA f16", "petal cuda", "f16"),
               ("PyTorch TF32", "torch", "eager"), ("PyTorch AMP", "torch", "amp")]
    for what in ("train", "infer", "latency"):
        batches = sorted({r["batch"] for r in rows if r["what"] == what})
        if not batches:
            continue
        print(f"\n{what}, batch {'/'.join(map(str, batches))} (img/s; GiB peak device memory;"
              " first step s)")
        print("| model | " + " | ".join(c[0] for c in columns)
              + " | best petal / PyTorch TF32 | best petal / PyTorch AMP |")
        print("|" + " --- |" * (len(columns) + 3))
        for arch in sorted({r["arch"] for r in rows if r["what"] == what}):
            cell = {name: by.get((tool, what, arch, prec)) for name, tool, prec in columns}

            def show(r):
                if not r:
                    return "-"
                first = r.get("first_step_s")
                return (f"{r['images_per_s']:.1f}; {gib(r.get('device_bytes'))}; "
                        f"{first:.1f}" if first is not None else f"{r['images_per_s']:.1f}")

            petal = [r for name, r in cell.items() if r and not name.startswith("PyTorch")]
            best = max(petal, key=lambda r: r["images_per_s"], default=None)

            def ratio(peer):
                p = cell[peer]
                return f"{best['images_per_s'] / p['images_per_s']:.2f}x" if best and p else "-"

            print(f"| {arch} | " + " | ".join(show(cell[c[0]]) for c in columns)
                  + f" | {ratio('PyTorch TF32')} | {ratio('PyTorch AMP')} |")
    loader = [r for r in rows if r["what"].startswith("loader")]
    if loader:
        print("\ndata loader (img/s at 224)")
        for r in loader:
            print(f"  {r['what']}: {r['images_per_s']:.1f} on {r['device']}")
        consumed = max((r["images_per_s"] for r in rows
                        if r["tool"] == "petal" and r["what"] == "train"), default=None)
        train_rate = next((r["images_per_s"] for r in loader if "augmented" in r["what"]), None)
        if consumed and train_rate:
            print(f"  augmented loader / fastest petal training step: {train_rate / consumed:.2f}x"
                  " (target >= 1.5x)")
    epoch = {r["tool"] == "petal": r for r in rows if r["what"] == "epoch"}
    if len(epoch) == 2:
        p, t = epoch[True], epoch[False]
        print(f"\none epoch, 3,670 photos, ResNet-101: petal {p['images_per_s']:.1f} img/s, "
              f"PyTorch AMP + DataLoader {t['images_per_s']:.1f} img/s: "
              f"petal takes {t['images_per_s'] / p['images_per_s']:.2f}x PyTorch's time (target <= 1.2x)")


if __name__ == "__main__":
    main()
