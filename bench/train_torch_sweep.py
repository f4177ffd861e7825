#!/usr/bin/env python3
"""PyTorch learning-rate sweep of the `shrink train` recipe on Fashion-MNIST:
Adam, per-batch cosine annealing to 0 over the run, batch 128, pixel/255,
no augmentation; LeNets 8 epochs, MobileNetV2-tiny 4; lr in {1e-3, 2e-3,
3e-3, 5e-3}, seeds 0 and 1 (MobileNetV2-tiny: seed 0). Runs on CUDA when
there is a GPU (that is how bench/results/train/torch_lr_sweep_h200.json was
made, on an H200: torch 2.11+cu130, by the script kept beside it, which
differs from this one in its data paths only), else on the CPU. Writes the test
accuracy after every epoch of every run to $OUT/sweep.json (default /tmp).

  python3 bench/train_torch_sweep.py        (data: $SHRINK_CACHE/fashion-mnist)
"""
import json, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_vs_torch import CACHE, MODELS, idx, nn, np, torch  # noqa: E402

dev = "cuda" if torch.cuda.is_available() else "cpu"
print("torch", torch.__version__, dev, flush=True)
d = os.path.join(CACHE, "fashion-mnist")
X = torch.from_numpy(idx(f"{d}/train-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1).to(dev)
Y = torch.from_numpy(idx(f"{d}/train-labels-idx1-ubyte.gz").astype(np.int64)).to(dev)
XT = torch.from_numpy(idx(f"{d}/t10k-images-idx3-ubyte.gz").copy()).float().div(255).unsqueeze(1).to(dev)
YT = torch.from_numpy(idx(f"{d}/t10k-labels-idx1-ubyte.gz").astype(np.int64)).to(dev)


def run(model, epochs, lr, seed):
    torch.manual_seed(seed)
    m = MODELS[model]().to(dev)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    n = len(Y)
    steps = (n + 127) // 128
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    g = torch.Generator().manual_seed(seed)
    accs = []
    for ep in range(epochs):
        m.train()
        order = torch.randperm(n, generator=g).to(dev)
        for i in range(0, n, 128):
            ix = order[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(m(X[ix]), Y[ix]).backward()
            opt.step()
            sch.step()
        m.eval()
        with torch.no_grad():
            accs.append(round((m(XT).argmax(1) == YT).float().mean().item() * 100, 2))
    return accs


def main():
    res = []
    t0 = time.time()
    jobs = [(m, 8, lr, s) for m in ["lenet5", "lenet5_bn", "lenet300100"] for lr in [1e-3, 2e-3, 3e-3, 5e-3] for s in [0, 1]]
    jobs += [("mobilenetv2_tiny", 4, lr, 0) for lr in [1e-3, 2e-3, 3e-3, 5e-3]]
    out = os.environ.get("OUT", "/tmp")
    os.makedirs(out, exist_ok=True)
    for j in jobs:
        a = run(*j)
        r = dict(model=j[0], epochs=j[1], lr=j[2], seed=j[3], acc=a)
        res.append(r)
        print(json.dumps(r), f"t={time.time() - t0:.0f}s", flush=True)
        json.dump(res, open(os.path.join(out, "sweep.json"), "w"))


if __name__ == "__main__":
    main()
