#!/usr/bin/env python3
"""Training speed of shrink against PyTorch CPU: seconds per Fashion-MNIST epoch,
same model, batch, optimiser (Adam + per-batch cosine), thread count, same run.

For each model this trains the first --samples training images for one epoch
with PyTorch (torch.set_num_threads(--threads)) and with `shrink train`
(--threads), alternating the two --reps times so machine noise hits both, and
scales the median to a full 60,000-image epoch. Only the training loop is timed
(batch gathering, forward, loss, backward, optimiser step); evaluation and
start-up are not. Prints a Markdown table (ratio = shrink / PyTorch time; < 1
means shrink is faster).

  python3 bench/train_vs_torch.py [--threads 1] [--samples 12800] [--reps 3] \
      [--models lenet5,mobilenetv2_tiny] [--out bench/results/train_vs_torch.md]

Needs: torch (CPU), numpy; cargo build --release -p shrink; scripts/fetch-assets.
"""
import argparse, gzip, json, os, statistics, subprocess, tempfile, time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SHRINK_CACHE", os.path.expanduser("~/.cache/shrink"))
SHRINK = os.environ.get("SHRINK_BIN", os.path.join(ROOT, "target", "release", "shrink"))


def idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    ndim = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * ndim).reshape(dims)


# The architectures of shrink-train's zoo (and of the shared reference models).
class LeNet300100(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self, bn=False):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.bn1 = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.bn2 = nn.BatchNorm2d(16) if bn else nn.Identity()
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, t, cout, stride):
        super().__init__()
        h = cin * t
        layers = []
        if t != 1:
            layers += [nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6()]
        layers += [nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                   nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2Tiny(nn.Module):
    BLOCKS = [(16, 1, 16, 1), (16, 4, 24, 2), (24, 4, 24, 1), (24, 4, 32, 2), (32, 4, 32, 1), (32, 4, 64, 2), (64, 4, 64, 1)]

    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        layers += [InvertedResidual(*b) for b in self.BLOCKS]
        layers += [nn.Conv2d(64, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


MODELS = {"lenet300100": LeNet300100, "lenet5": LeNet5, "lenet5_bn": lambda: LeNet5(True),
          "mobilenetv2_tiny": MobileNetV2Tiny}


def torch_epoch(name, x_u8, y, batch, seed):
    torch.manual_seed(seed)
    model = MODELS[name]()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = (len(y) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    loss_fn = nn.CrossEntropyLoss()
    xs = torch.from_numpy(x_u8)
    ys = torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    t0 = time.perf_counter()
    for i in range(0, len(y), batch):
        idx = order[i:i + batch]
        xb = (xs[idx].float() / 255.0).unsqueeze(1)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), ys[idx])
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - t0


def shrink_epoch(name, samples, batch, threads, seed):
    out = os.path.join(tempfile.mkdtemp(), name + ".onnx")
    cmd = [SHRINK, "train", "--model", name, "--dataset", "fashion-mnist", "--epochs", "1",
           "--batch", str(batch), "--threads", str(threads), "--seed", str(seed), "--limit", str(samples),
           "--eval-limit", "1", "--json", "-o", out]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return res["epochs"][0]["seconds"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=12800)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default="lenet5,mobilenetv2_tiny")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = os.path.join(CACHE, "fashion-mnist")
    x = idx(os.path.join(d, "train-images-idx3-ubyte.gz"))[:args.samples].copy()
    y = idx(os.path.join(d, "train-labels-idx1-ubyte.gz"))[:args.samples].copy()
    scale = 60000 / args.samples
    rows = [f"threads {args.threads}, batch {args.batch}, {args.samples} images per timed epoch scaled to 60,000, "
            f"median of {args.reps}; torch {torch.__version__}",
            "", "| model | PyTorch s/epoch | shrink s/epoch | shrink / PyTorch |", "|---|---:|---:|---:|"]
    for name in args.models.split(","):
        tt, ts = [], []
        for r in range(args.reps):
            tt.append(torch_epoch(name, x, y, args.batch, r) * scale)
            ts.append(shrink_epoch(name, args.samples, args.batch, args.threads, r) * scale)
            print(f"{name} rep {r}: torch {tt[-1]:.1f} s, shrink {ts[-1]:.1f} s", flush=True)
        mt, ms = statistics.median(tt), statistics.median(ts)
        rows.append(f"| {name} | {mt:.1f} | {ms:.1f} | {ms / mt:.2f} |")
    text = "\n".join(rows)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
