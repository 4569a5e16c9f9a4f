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
        tool = "petal" if r["tool"] == "petal" else "torch"
        by[(tool, r["what"], r["arch"], r["precision"])] = r
    devices = sorted({r["device"] for r in rows if r["what"] in ("train", "infer")})
    print("devices:", *devices, sep="\n  ")
    for what in ("train", "infer"):
        batches = sorted({r["batch"] for r in rows if r["what"] == what})
        if not batches:
            continue
        print(f"\n{what}, batch {'/'.join(map(str, batches))} (img/s; GiB peak device memory;"
              " first step s)")
        print("| model | petal f32 | petal f16 | PyTorch eager | PyTorch AMP | f16 / eager | f16 / AMP | f32 / eager |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for arch in sorted({r["arch"] for r in rows if r["what"] == what}):
            cell = {}
            for key, tool, prec in (("f32", "petal", "f32"), ("f16", "petal", "f16"),
                                    ("eager", "torch", "eager"), ("amp", "torch", "amp")):
                cell[key] = by.get((tool, what, arch, prec))

            def show(r):
                if not r:
                    return "-"
                return (f"{r['images_per_s']:.1f}; {gib(r.get('device_bytes'))}; "
                        f"{r['first_step_s']:.1f}")

            def ratio(a, b):
                a, b = cell[a], cell[b]
                return f"{a['images_per_s'] / b['images_per_s']:.2f}x" if a and b else "-"

            print(f"| {arch} | {show(cell['f32'])} | {show(cell['f16'])} | {show(cell['eager'])}"
                  f" | {show(cell['amp'])} | {ratio('f16', 'eager')} | {ratio('f16', 'amp')}"
                  f" | {ratio('f32', 'eager')} |")
    latency = [r for r in rows if r["what"] == "latency"]
    if latency:
        print("\none photo at a time (batch 1, logits read back each time; the page's native proxy)")
        print("| model | petal f32 ms/image | petal f16 ms/image |")
        print("| --- | --- | --- |")
        for arch in sorted({r["arch"] for r in latency}):
            ms = {r["precision"]: f"{1000 / r['images_per_s']:.2f}" for r in latency if r["arch"] == arch}
            print(f"| {arch} | {ms.get('f32', '-')} | {ms.get('f16', '-')} |")
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
