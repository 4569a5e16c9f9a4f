#!/usr/bin/env python3
"""Batch scoring on the CPU, whole process, against what a user would pick instead.

Scores the same photos with the same seeded torchvision weights five ways, each a separate
process measured from start to exit (load, decode, preprocess, forward, CSV):

  petal            `petal score --device cpu` (BatchNorm folded, channels-last kernels)
  petal-unfolded   the same with PETAL_NO_FOLD=1: burn's flex backend layer by layer
  pytorch          torch + torchvision transforms, batch 16, torch.no_grad, all cores
  onnxruntime      ONNX Runtime (all graph optimisations, all cores) + Pillow/NumPy
                   preprocessing, the model exported from the same weights by torch.onnx
  openvino         OpenVINO on the same ONNX file, THROUGHPUT mode (several single-photo
                   requests in flight, "streams"), f32, the same Pillow/NumPy preprocessing

Runs are paired (each round runs every tool once, in turn) and medians are reported, with
petal's ratio to each tool: speed (their wall time / ours), CPU seconds and peak memory.

  /usr/bin/python3 benches/cpu_score_bench.py --petal target/release/petal \\
      [--arch resnet50 resnet101 convnext_tiny efficientnet_b0] [--photos 40] [--runs 3] [--work DIR]

Needs Debian's python3-torchvision, and `onnxruntime` and `openvino` importable (scripts/bench-cpu
installs them into /var/tmp/petal-bench-py and sets PYTHONPATH).
"""
import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
BATCH = 16


def list_photos(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))


def write_csv(path, names, labels, probs):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "label", "prob"])
        for n, l, p in zip(names, labels, probs):
            w.writerow([n, l, f"{p:.6f}"])


# --- the opponents, each run as its own process ------------------------------------------


def score_pytorch(arch, weights, photos, out):
    import torch
    import torchvision
    from PIL import Image
    from torchvision import transforms as T

    torch.set_num_threads(os.cpu_count())
    model = getattr(torchvision.models, arch)()
    model.load_state_dict(torch.load(weights))
    model.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])
    names = list_photos(photos)
    labels, probs = [], []
    with torch.no_grad():
        for i in range(0, len(names), BATCH):
            x = torch.stack([tf(Image.open(os.path.join(photos, n)).convert("RGB"))
                             for n in names[i:i + BATCH]])
            p = torch.softmax(model(x), 1)
            best = p.argmax(1)
            labels += [f"class{int(b)}" for b in best]
            probs += [float(p[j, b]) for j, b in enumerate(best)]
    write_csv(out, names, labels, probs)


def pillow_tensor(path, np, Image):
    """torchvision's Resize(256) + CenterCrop(224) + ToTensor + Normalize with Pillow and NumPy."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_long = int(256 * long / short)
    size = (256, new_long) if w <= h else (new_long, 256)
    img = img.resize(size, Image.BILINEAR)
    w, h = img.size
    left, top = int(round((w - 224) / 2.0)), int(round((h - 224) / 2.0))
    img = img.crop((left, top, left + 224, top + 224))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1)


def score_onnxruntime(model_path, photos, out):
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = os.cpu_count()
    session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    names = list_photos(photos)
    labels, probs = [], []
    for i in range(0, len(names), BATCH):
        x = np.stack([pillow_tensor(os.path.join(photos, n), np, Image) for n in names[i:i + BATCH]])
        logits = session.run(None, {"x": x})[0].astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        best = p.argmax(1)
        labels += [f"class{int(b)}" for b in best]
        probs += [float(p[j, b]) for j, b in enumerate(best)]
    write_csv(out, names, labels, probs)


def score_openvino(model_path, photos, out):
    """OpenVINO at its best for a folder: the ONNX file compiled for one photo per request in
    its THROUGHPUT mode, which runs several requests at once (its "streams", one per core or
    so) and picks their number itself; Pillow preprocessing as for ONNX Runtime."""
    import numpy as np
    import openvino as ov
    from PIL import Image

    core = ov.Core()
    model = core.read_model(model_path)
    model.reshape([1, 3, 224, 224])
    # f32 like every other tool here: on a CPU with bf16 instructions OpenVINO's default is
    # bf16, faster and less exact (it changed 2 of 40 ResNet-50 labels and 5 of 40 ResNet-101
    # ones here); PETAL_OPENVINO_PRECISION=bf16 measures that.
    precision = os.environ.get("PETAL_OPENVINO_PRECISION", "f32")
    compiled = core.compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": precision}
    )
    queue = ov.AsyncInferQueue(compiled)
    names = list_photos(photos)
    logits = [None] * len(names)

    def done(request, i):
        logits[i] = request.get_output_tensor(0).data[0].astype(np.float64)

    queue.set_callback(done)
    for i, name in enumerate(names):
        x = pillow_tensor(os.path.join(photos, name), np, Image)[None]
        queue.start_async({0: x}, userdata=i)
    queue.wait_all()
    labels, probs = [], []
    for row in logits:
        e = np.exp(row - row.max())
        p = e / e.sum()
        best = int(p.argmax())
        labels.append(f"class{best}")
        probs.append(float(p[best]))
    write_csv(out, names, labels, probs)


# --- set-up: weights, bundle, ONNX file, photos -----------------------------------------------


def artefacts(arch, work):
    return (os.path.join(work, f"{arch}.pth"), os.path.join(work, f"{arch}-bundle"),
            os.path.join(work, f"{arch}.onnx"))


def prepare(arch, petal, work):
    """Seeded weights, the bundle petal imports from them and the ONNX export. Runs in a child
    process: a child's peak RSS on Linux starts at its parent's, so the measuring process
    itself must stay small (no torch imported here)."""
    import torch
    import torchvision

    sys.path.insert(0, os.path.join(ROOT, "tests/reference"))
    from torchvision_ref import randomise_batchnorm, randomise_convnext, randomise_efficientnet

    weights, bundle, onnx = artefacts(arch, work)
    if all(os.path.exists(p) for p in (weights, bundle, onnx)):
        return
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = getattr(torchvision.models, arch)()
    if arch.startswith("convnext"):
        randomise_convnext(model, gen)
    elif arch.startswith("efficientnet"):
        randomise_efficientnet(model, gen, 224)
    else:
        randomise_batchnorm(model, gen, 224)
    model.eval()
    torch.save(model.state_dict(), weights)
    labels = os.path.join(work, "labels.txt")
    with open(labels, "w") as f:
        f.writelines(f"class{i}\n" for i in range(1000))
    # Resize 256 for every network, as the PyTorch and ONNX Runtime runs below preprocess
    # (ConvNeXt's own default would be 236): the same pixels in, the same labels out.
    subprocess.run([petal, "import", weights, "--arch", arch, "--labels", labels, "--resize", "256",
                    "-o", bundle], check=True, stdout=subprocess.DEVNULL)
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), onnx, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                      opset_version=13)


def make_photos(folder, count):
    """`count` flower-photo-sized JPEGs (500x375, quality 90) cut from the fixture photos."""
    if os.path.isdir(folder) and len(list_photos(folder)) == count:
        return
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    fixtures = os.environ.get("PETAL_FIXTURES", os.path.join(ROOT, "../shared/fixtures"))
    sources = [os.path.join(fixtures, "photos", n) for n in list_photos(os.path.join(fixtures, "photos"))]
    rng = random.Random(7)
    for i in range(count):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = img.crop((x, y, x + cw, y + ch)).resize((500, 375), Image.BICUBIC)
        if i % 2:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img.save(os.path.join(folder, f"photo_{i:03}.jpg"), quality=90)


# --- measuring --------------------------------------------------------------------------------


def measure(cmd, env=None):
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def labels_of(path):
    with open(path) as f:
        return [row[1] for row in list(csv.reader(f))[1:]]


def bench(arch, args, work):
    me = [sys.executable, os.path.abspath(__file__)]
    subprocess.run(me + ["--child", "prepare", arch, args.petal, work], check=True)
    weights, bundle, onnx = artefacts(arch, work)
    photos = os.path.join(work, "photos")
    out = lambda name: os.path.join(work, f"{arch}.{name}.csv")
    tools = {
        "petal": ([args.petal, "score", "--device", "cpu", "--model", bundle, "--images", photos,
                   "--out", out("petal")], {}),
        "petal-unfolded": ([args.petal, "score", "--device", "cpu", "--model", bundle, "--images",
                            photos, "--out", out("petal-unfolded")], {"PETAL_NO_FOLD": "1"}),
        "pytorch": (me + ["--child", "pytorch", arch, weights, photos, out("pytorch")], {}),
        "onnxruntime": (me + ["--child", "onnxruntime", arch, onnx, photos, out("onnxruntime")], {}),
        "openvino": (me + ["--child", "openvino", arch, onnx, photos, out("openvino")], {}),
    }
    tools = {k: v for k, v in tools.items() if k in args.tools}
    samples = {name: [] for name in tools}
    for _ in range(args.runs):
        for name, (cmd, extra) in tools.items():
            samples[name].append(measure(cmd, {**os.environ, **extra}))
    med = {name: [statistics.median(s[i] for s in runs) for i in range(3)]
           for name, runs in samples.items()}
    reference = labels_of(out("pytorch")) if "pytorch" in tools else None
    n = len(list_photos(photos))
    print(f"\n{arch}, {n} photos, {os.cpu_count()} cores, median of {args.runs} paired runs")
    print(f"{'tool':<15} {'wall s':>7} {'img/s':>6} {'CPU s':>7} {'peak MiB':>9} | "
          f"{'petal speed':>11} {'petal CPU':>9} {'petal mem':>9} | same labels")
    ours = med.get("petal")
    for name, (wall, cpu, mem) in med.items():
        same = "" if reference is None else f"{sum(a == b for a, b in zip(labels_of(out(name)), reference))}/{n}"
        ratios = ("" if ours is None else
                  f"{wall / ours[0]:>10.2f}x {ours[1] / cpu:>8.2f}x {ours[2] / mem:>8.2f}x")
        print(f"{name:<15} {wall:>7.2f} {n / wall:>6.2f} {cpu:>7.2f} {mem:>9.0f} | {ratios:>31} | {same}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind = sys.argv[2]
        if kind == "prepare":
            prepare(*sys.argv[3:6])
            return
        if kind == "photos":
            make_photos(sys.argv[3], int(sys.argv[4]))
            return
        arch, model, photos, out = sys.argv[3:7]
        if kind == "pytorch":
            score_pytorch(arch, model, photos, out)
        elif kind == "openvino":
            score_openvino(model, photos, out)
        else:
            score_onnxruntime(model, photos, out)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--petal", required=True, help="the petal binary")
    ap.add_argument("--arch", nargs="+", default=["resnet50", "resnet101"])
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", nargs="+",
                    default=["petal", "petal-unfolded", "pytorch", "onnxruntime", "openvino"])
    ap.add_argument("--work", help="folder for weights, bundles and photos (kept between runs)")
    args = ap.parse_args()
    args.petal = os.path.abspath(args.petal)
    work = args.work or tempfile.mkdtemp(prefix="petal-cpu-bench-")
    os.makedirs(work, exist_ok=True)
    # In a child too: Pillow's decoders would raise this process's peak RSS.
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "photos",
                    os.path.join(work, "photos"), str(args.photos)], check=True)
    print("petal speed = their wall time / petal's (above 1: petal is faster); "
          "petal CPU and mem = petal's / theirs (below 1: petal uses less)")
    for arch in args.arch:
        bench(arch, args, work)


if __name__ == "__main__":
    main()
