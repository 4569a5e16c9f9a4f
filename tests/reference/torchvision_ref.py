#!/usr/bin/env python3
"""Reference outputs from torchvision itself, for Petal's network parity tests.

For each requested network (resnet18 ... resnet152, convnext_tiny, efficientnet_b0) this writes,
into --out:
  ARCH.pth               seeded torchvision weights with randomised BatchNorm statistics
                         (zip format; --legacy writes torch's old non-zip pickle format,
                         the format of torchvision's published ImageNet files)
  ARCH.safetensors       the same tensors in safetensors format (written by hand: no extra
                         Python package needed)
  input.npy              float32 [N, 3, S, S] network input (random + real photos if given)
  ARCH.STAGE.npy         float32 activations: ResNet stem, layer1..layer4, pooled, logits;
                         ConvNeXt stem, stage1..stage4, features (pooled + LayerNorm), logits;
                         EfficientNet stage0..stage8 (the outputs of features[0..8]: stem,
                         the seven MBConv stages, the 1x1 convolution to 1280), features
                         (pooled), logits
  ARCH.gradcam.npy       float32 [N, S/32, S/32]: Grad-CAM of each image's top-1 class, from
                         torch's autograd through the head

Run with Debian's torch: /usr/bin/python3 tests/reference/torchvision_ref.py --out DIR resnet18
"""
import argparse
import json
import struct

import numpy as np
import torch
import torchvision


def random_batchnorm_parameters(model, gen):
    """Random affine parameters for every BatchNorm, running statistics reset and set to a
    cumulative average for the calibration batches of `calibrate_batchnorm`."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches


def calibrate_batchnorm(model, gen, size):
    """Running statistics measured on two batches of random images (as training would), then
    torchvision's momentum back. The caller puts the BatchNorm layers in train mode."""
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size, generator=gen))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1


def randomise_batchnorm(model, gen, size):
    """Non-trivial BatchNorm parameters and statistics, so that a mapping mistake cannot hide
    behind gamma 1 / beta 0 / mean 0 / var 1. The running statistics are measured on random
    images (as training would), which keeps a 101-layer network's activations bounded."""
    random_batchnorm_parameters(model, gen)
    # A trained ResNet's residual branches add small corrections; scaling each block's last BN
    # keeps a deep network's activations in a trained network's range too.
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            last = block.bn3 if hasattr(block, "bn3") else block.bn2
            last.weight.data.mul_(0.3)
    # Spread the logits to a trained classifier's range (about ±15), so top-5 is decisive.
    model.fc.weight.data.mul_(8.0)
    model.train()
    calibrate_batchnorm(model, gen, size)


def randomise_efficientnet(model, gen, size):
    """EfficientNet's BatchNorms as randomise_batchnorm makes ResNet's: random affine
    parameters, running statistics measured on random images (BatchNorm layers alone in train
    mode, so that stochastic depth and dropout do not touch the measurement)."""
    random_batchnorm_parameters(model, gen)
    # Small residual corrections, as in a trained network (each residual block's projection BN).
    for stage in model.features[1:8]:
        for block in stage:
            if block.use_res_connect:
                block.block[-1][1].weight.data.mul_(0.3)
    # torchvision's classifier init already gives logits in a trained classifier's range here
    # (about ±14), so top-5 is decisive without scaling.
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
    calibrate_batchnorm(model, gen, size)


def randomise_convnext(model, gen):
    """Non-trivial LayerNorm parameters and layer scales: torchvision initialises every block's
    layer scale to 1e-6, which would make each block an identity and hide any mistake inside
    it. Scales of 0.5-1.5 make each block move its input by about a tenth of its range."""
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            n = m.normalized_shape[0]
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    for stage in model.features[1::2]:
        for block in stage:
            c = block.layer_scale.shape[0]
            block.layer_scale.data.copy_((torch.rand(c, generator=gen) + 0.5).view(c, 1, 1))
    # Spread the logits to a trained classifier's range, so top-5 is decisive.
    model.classifier[2].weight.data.mul_(20.0)


def save_safetensors(state_dict, path):
    header, blobs, offset = {}, [], 0
    for name, t in state_dict.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def stages(model, x):
    out = {}
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out["stem"] = x
    for i in range(1, 5):
        x = getattr(model, f"layer{i}")(x)
        out[f"layer{i}"] = x
    x = torch.flatten(model.avgpool(x), 1)
    out["pooled"] = x
    out["logits"] = model.fc(x)
    return out


def convnext_stages(model, x):
    out = {}
    f = model.features
    x = f[0](x)
    out["stem"] = x
    for s in range(4):
        if s > 0:
            x = f[2 * s](x)
        x = f[2 * s + 1](x)
        out[f"stage{s + 1}"] = x
    x = model.classifier[1](model.classifier[0](model.avgpool(x)))
    out["features"] = x
    out["logits"] = model.classifier[2](x)
    return out


def efficientnet_stages(model, x):
    out = {}
    for i, layer in enumerate(model.features):
        x = layer(x)
        out[f"stage{i}"] = x
    x = torch.flatten(model.avgpool(x), 1)
    out["features"] = x
    out["logits"] = model.classifier(x)
    return out


def grad_cam(head, last):
    """Grad-CAM (Selvaraju et al. 2017) of each image's top-1 class: the last stage's channels
    weighted by the mean gradient of the class's logit over the grid, summed, ReLU."""
    last = last.detach().requires_grad_(True)
    logits = head(last)
    top = logits.argmax(1, keepdim=True)
    logits.gather(1, top).sum().backward()
    weights = last.grad.mean((2, 3), keepdim=True)
    return torch.relu((weights * last).sum(1)).detach()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--legacy", action="store_true", help="save .pth in the legacy non-zip format")
    ap.add_argument("--photo", action="append", default=[], help="a [3,S,S] float32 .npy to add to the batch")
    ap.add_argument("arch", nargs="+")
    args = ap.parse_args()

    gen = torch.Generator().manual_seed(args.seed)
    batch = [torch.randn(3, args.size, args.size, generator=gen)]
    batch += [torch.from_numpy(np.load(p)) for p in args.photo]
    x = torch.stack(batch).float()
    np.save(f"{args.out}/input.npy", x.numpy())

    for arch in args.arch:
        torch.manual_seed(args.seed)
        model = getattr(torchvision.models, arch)(num_classes=args.classes)
        convnext = arch.startswith("convnext")
        efficientnet = arch.startswith("efficientnet")
        if convnext:
            randomise_convnext(model, gen)
        elif efficientnet:
            randomise_efficientnet(model, gen, args.size)
        else:
            randomise_batchnorm(model, gen, args.size)
        model.eval()
        sd = model.state_dict()
        torch.save(sd, f"{args.out}/{arch}.pth", _use_new_zipfile_serialization=not args.legacy)
        save_safetensors(sd, f"{args.out}/{arch}.safetensors")
        with torch.no_grad():
            if convnext:
                outs = convnext_stages(model, x)
            elif efficientnet:
                outs = efficientnet_stages(model, x)
            else:
                outs = stages(model, x)
        if convnext:
            outs["gradcam"] = grad_cam(lambda t: model.classifier(model.avgpool(t)), outs["stage4"])
        elif efficientnet:
            last = outs[f"stage{len(model.features) - 1}"]
            outs["gradcam"] = grad_cam(lambda t: model.classifier(torch.flatten(model.avgpool(t), 1)), last)
        else:
            outs["gradcam"] = grad_cam(lambda t: model.fc(torch.flatten(model.avgpool(t), 1)), outs["layer4"])
        for name, t in outs.items():
            np.save(f"{args.out}/{arch}.{name}.npy", t.numpy().astype(np.float32))
        logits = outs["logits"]
        print(f"{arch}: logits in [{logits.min():.2f}, {logits.max():.2f}]")


if __name__ == "__main__":
    main()
