#!/usr/bin/env python3
"""PyTorch reference run of the recipe `shrink train` uses, to tell recipe
effects from engine effects: the same architectures as shrink's zoo
(bench/train_vs_torch.py), Adam, per-batch cosine annealing to 0 over the
whole run, batch 128, pixel/255 inputs, no augmentation; prints the mean
training loss and the 10k-image test accuracy after every epoch.

  python3 bench/train_torch_reference.py lenet5 8 [--lr 3e-3] [--threads 1] [--seed 0]
"""
import argparse, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_vs_torch import CACHE, MODELS, idx, nn, np, torch  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("epochs", type=int)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = os.path.join(CACHE, "fashion-mnist")
    x = torch.from_numpy(idx(os.path.join(d, "train-images-idx3-ubyte.gz")).copy())
    y = torch.from_numpy(idx(os.path.join(d, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    xt = (torch.from_numpy(idx(os.path.join(d, "t10k-images-idx3-ubyte.gz")).copy()).float() / 255).unsqueeze(1)
    yt = idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
    torch.manual_seed(args.seed)
    m = MODELS[args.model]()
    opt = torch.optim.Adam(m.parameters(), lr=args.lr)
    n = len(y)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * ((n + 127) // 128))
    for ep in range(args.epochs):
        m.train()
        order = torch.randperm(n)
        total = 0.0
        for i in range(0, n, 128):
            ix = order[i:i + 128]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m((x[ix].float() / 255).unsqueeze(1)), y[ix])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(ix)
        m.eval()
        with torch.no_grad():
            acc = (m(xt).argmax(1).numpy() == yt).mean() * 100
        print(f"{args.model} epoch {ep + 1}: train loss {total / n:.4f}, test accuracy {acc:.2f}%", flush=True)


if __name__ == "__main__":
    main()
