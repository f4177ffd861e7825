#!/usr/bin/env python3
"""Reference values for shrink's histogram observers (tests/ptq_observers.rs).

Writes crates/shrink-compress/tests/fixtures/ptq_observer_reference.json:
fixed |x| histograms (2048 bins) with the TensorRT / MXNet entropy threshold
computed by a NumPy implementation (MXNet's `_get_optimal_threshold` loop,
scipy-style normalised KL with MXNet's smoothing), and fixed samples with
NumPy percentiles.
"""
import json
import numpy as np

OUT = "crates/shrink-compress/tests/fixtures/ptq_observer_reference.json"


def smooth(p, eps=1e-4):
    is_zeros = (p == 0).astype(np.float64)
    is_nonzeros = (p != 0).astype(np.float64)
    n_zeros = is_zeros.sum()
    n_nonzeros = p.size - n_zeros
    if not n_nonzeros:
        return None
    eps1 = eps * n_zeros / n_nonzeros
    return p.astype(np.float64) + eps * is_zeros - eps1 * is_nonzeros


def kl(p, q):
    p = p / p.sum()
    q = q / q.sum()
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def entropy_bins(hist, levels):
    n = len(hist)
    best = (np.inf, n)
    for i in range(levels, n + 1):
        sliced = hist[:i].astype(np.float64)
        p = sliced.copy()
        p[i - 1] += hist[i:].sum()
        nonzero = sliced != 0
        merged = i // levels
        q = np.zeros(i)
        for j in range(levels):
            start = j * merged
            stop = i if j == levels - 1 else start + merged
            nz = nonzero[start:stop].sum()
            if nz:
                q[start:stop] = np.where(nonzero[start:stop], sliced[start:stop].sum() / nz, 0.0)
        ps, qs = smooth(p), smooth(q)
        if ps is None or qs is None:
            continue
        d = kl(ps, qs)
        if d < best[0]:
            best = (d, i)
    return best[1]


def main():
    rs = np.random.RandomState(2024)
    cases = []
    for name, x in [
        ("relu_gauss", np.maximum(rs.normal(0.5, 1.0, 200000), 0)),
        ("laplace_outliers", np.concatenate([np.abs(rs.laplace(0, 0.3, 100000)), [25.0, 40.0]])),
        ("uniform", rs.uniform(0, 3, 50000)),
    ]:
        amax = float(np.abs(x).max())
        hist, _ = np.histogram(np.abs(x), bins=2048, range=(0, amax))
        for levels in (128, 256):
            cases.append({"name": name, "levels": levels, "hist": hist.tolist(),
                          "bins": entropy_bins(hist, levels)})
    samples = rs.standard_t(3, 4001).astype(np.float32)
    pct = {str(p): [float(np.percentile(samples, 100 - p, method="lower")),
                    float(np.percentile(samples, p, method="higher"))] for p in (99.0, 99.9)}
    absp = {str(p): float(np.percentile(np.abs(samples), p, method="higher")) for p in (99.0, 99.9)}
    json.dump({"entropy": cases, "samples": samples.tolist(), "percentile_two_tail": pct,
               "percentile_abs": absp}, open(OUT, "w"))
    print({c["name"] + str(c["levels"]): c["bins"] for c in cases}, pct, absp)


if __name__ == "__main__":
    main()
