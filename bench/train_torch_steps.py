#!/usr/bin/env python3
"""PyTorch reference for shrink-train's "same inputs, same numbers" tests:
one training step's loss and gradients, and the weights after a few steps of
the recipe `shrink train` uses (Adam, per-batch cosine, batch 128), for
LeNet-5 and LeNet-5-BN built as in bench/train_vs_torch.py.

Inputs are the first 256 shared sample test images
(shared/data/fashion/test_sample_x.npy, pixel/255) and their labels, fed in
order (no shuffling): batches [0,128), [128,256), [0,128), [128,256).

Writes crates/shrink-train/tests/fixtures/torch_steps_MODEL.safetensors with
  init.<param>    the initial state_dict (torch.manual_seed(0); lenet5 only:
                  lenet5_bn draws the same conv/fc weights, BN starts at 1/0)
  loss0           the first batch's mean cross-entropy (train mode)
  logits0         its logits
  grad.<param>    the first batch's gradients (lenet5_bn: not of the conv
                  biases, frozen there; see below)
  step.<param>    parameters (and BN running statistics) after STEPS Adam steps
  losses          the loss of each of the STEPS batches
The Rust tests never run Python; re-run this only to regenerate:

    python3 bench/train_torch_steps.py
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_vs_torch import LeNet5  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SHRINK_SHARED", "/work/shared")
STEPS = 4
LR = 1e-3
T_MAX = STEPS  # cosine over the run, stepped per batch, as `shrink train` does


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().numpy() if torch.is_tensor(t) else t)
        dtype = {np.float32: "F32", np.int64: "I64"}[a.dtype.type]
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"producer": f"bench/train_torch_steps.py, torch {torch.__version__}"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    torch.set_num_threads(1)
    x = np.load(os.path.join(SHARED, "data/fashion/test_sample_x.npy"))
    y = torch.from_numpy(np.load(os.path.join(SHARED, "data/fashion/test_sample_y.npy")).astype(np.int64))
    x = (torch.from_numpy(x.copy()).float() / 255).unsqueeze(1)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in LeNet5(False).state_dict().items()}
    for bn in (False, True):
        m = LeNet5(bn)
        own = m.state_dict()
        m.load_state_dict({**own, **init}, strict=True)
        m.train()
        out = {}
        if not bn:
            out.update({f"init.{k}": v for k, v in init.items()})
        # A conv bias right before BatchNorm has a true gradient of 0, so its
        # computed one is rounding noise that Adam blows up to ±lr steps, which
        # then leak into the running means: in the multi-step run of the BN
        # model those biases stay frozen (the Rust test freezes them too).
        if bn:
            m.conv1.bias.requires_grad_(False)
            m.conv2.bias.requires_grad_(False)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T_MAX)
        losses = []
        for s in range(STEPS):
            ix = slice((s % 2) * 128, (s % 2) * 128 + 128)
            opt.zero_grad()
            logits = m(x[ix])
            loss = torch.nn.functional.cross_entropy(logits, y[ix])
            loss.backward()
            if s == 0:
                out["loss0"] = loss.detach().reshape(1)
                out["logits0"] = logits
                out.update({f"grad.{k}": p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
            losses.append(loss.item())
            opt.step()
            sched.step()
        out["losses"] = np.array(losses, np.float32)
        out.update({f"step.{k}": v for k, v in m.state_dict().items() if v.dtype == torch.float32})
        name = "lenet5_bn" if bn else "lenet5"
        path = os.path.join(ROOT, f"crates/shrink-train/tests/fixtures/torch_steps_{name}.safetensors")
        save_safetensors(path, out)
        print(f"{name}: losses {losses}; wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
