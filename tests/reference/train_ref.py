"""PyTorch's side of Petal's training parity test: the staged recipe on fixed batches.

    train_ref.py --arch resnet18 --weights W.pth --batches BATCHES.json --plan PLAN.json \
        --out DIR [--adam-eps 1e-8] [--sgd-dampening 0] [--bn-momentum 0.1]

BATCHES.json: {"images": [[3,S,S] float32 .npy, ...] in training order, "labels": [...],
"batch_size": N}: every epoch visits them in that order, in batches of N, with no
augmentation (the tensors are Petal's own evaluation preprocessing, which equals
torchvision's). PLAN.json: the recipe's stages, as Petal reads them: [{"trainable": "head" |
"all-but-stem" | "all", "optimizer": "adam" | "sgd", "epochs": E, "lr": LR or null (continue
the previous stage's schedule and optimiser), "lr_step_epochs": K, "lr_gamma": G,
"momentum": M}].

What Petal does, written the PyTorch way:
- a frozen part of the network is `requires_grad_(False)` and in eval mode, so its BatchNorm
  layers normalise with their running statistics and do not update them;
- a stage without an lr keeps the optimiser and adds the newly trainable parameters to it (each
  parameter keeps its own Adam step count), and its learning rate continues the step schedule
  `lr * gamma ** (e // K)` over the epochs since the stage that set it;
- Adam with torch's defaults, SGD with momentum and no dampening, cross-entropy (mean).
The three flags exist to show that the parity test notices a wrong constant.

Writes DIR/losses.json (the loss of every step, in order) and DIR/final.pth (the state_dict
after the last step).
"""

import argparse
import json

import numpy as np
import torch
import torchvision


def groups(model, arch):
    """Petal's parameter groups: stem, body, head (module lists)."""
    if arch.startswith("resnet"):
        return {
            "stem": [model.conv1, model.bn1],
            "body": [model.layer1, model.layer2, model.layer3, model.layer4],
            "head": [model.fc],
        }
    if arch.startswith("convnext"):
        return {
            "stem": [model.features[0]],
            "body": list(model.features[1:]),
            "head": [model.classifier],
        }
    raise SystemExit(f"no parameter groups for {arch}")


TRAINS = {"head": ["head"], "all-but-stem": ["body", "head"], "all": ["stem", "body", "head"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batches", required=True)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--adam-eps", type=float, default=1e-8)
    ap.add_argument("--sgd-dampening", type=float, default=0.0)
    ap.add_argument("--bn-momentum", type=float, default=0.1)
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    spec = json.load(open(args.batches))
    plan = json.load(open(args.plan))
    images = torch.stack([torch.from_numpy(np.load(p)) for p in spec["images"]]).float()
    labels = torch.tensor(spec["labels"], dtype=torch.long)
    n = spec["batch_size"]
    batches = [(images[i : i + n], labels[i : i + n]) for i in range(0, len(labels), n)]

    state = torch.load(args.weights, map_location="cpu")
    if args.arch.startswith("convnext"):
        # Stochastic depth off: Petal's draws differ from PyTorch's (its recipe's
        # `stochastic_depth = false`).
        classes = state["classifier.2.weight"].shape[0]
        model = getattr(torchvision.models, args.arch)(num_classes=classes, stochastic_depth_prob=0.0)
    else:
        classes = state["fc.weight"].shape[0]
        model = getattr(torchvision.models, args.arch)(num_classes=classes)
    model.load_state_dict(state)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = args.bn_momentum
    parts = groups(model, args.arch)
    loss_fn = torch.nn.CrossEntropyLoss()

    losses = []
    optimizer = None
    in_optimizer = set()
    schedule = None  # (lr, step_epochs, gamma, epochs run so far)
    for stage in plan:
        trains = TRAINS[stage["trainable"]]
        model.train()
        for name, modules in parts.items():
            for m in modules:
                m.requires_grad_(name in trains)
                if name not in trains:
                    m.eval()
        params = [p for name in trains for m in parts[name] for p in m.parameters()]
        if stage["lr"] is not None:
            schedule = [stage["lr"], stage.get("lr_step_epochs") or 0, stage.get("lr_gamma") or 1.0, 0]
            if stage["optimizer"] == "adam":
                optimizer = torch.optim.Adam(params, lr=stage["lr"], eps=args.adam_eps)
            else:
                optimizer = torch.optim.SGD(
                    params, lr=stage["lr"], momentum=stage.get("momentum") or 0.0, dampening=args.sgd_dampening
                )
            in_optimizer = {id(p) for p in params}
        else:
            new = [p for p in params if id(p) not in in_optimizer]
            if new:
                optimizer.add_param_group({"params": new})
                in_optimizer |= {id(p) for p in new}
        for _ in range(stage["epochs"]):
            lr0, step_epochs, gamma, done = schedule
            lr = lr0 * gamma ** (done // step_epochs) if step_epochs else lr0
            for group in optimizer.param_groups:
                group["lr"] = lr
            for x, y in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            schedule[3] += 1

    json.dump(losses, open(f"{args.out}/losses.json", "w"))
    torch.save(model.state_dict(), f"{args.out}/final.pth")
    print(f"{len(losses)} steps, losses {losses[0]:.6f} … {losses[-1]:.6f}")


if __name__ == "__main__":
    main()
