"""Accuracy table: max abs error of float32 normalization against the float64-exact result.

    python benchmarks/accuracy_table.py [--offsets 0,1e2,1e3,1e4] [--json FILE]

For each op and each offset (data = offset + N(0, 1), rounded to float32) it prints the largest
|y - y_exact| over the output, where y_exact normalizes the same float32 values in float64
(fastnorm.reference), for
  - fastnorm (float32 in, float32 out),
  - torch.nn.functional on the CPU (when torch is importable),
  - the naive one-pass float32 formula: var = E[x^2] - E[x]^2 with float32 sums (NumPy's), then
    (x - E[x]) / sqrt(var + eps).
Ops: batch norm training; batch norm eval with running statistics equal to the true ones (rounded
to float32, as a float32 model stores them; the exact result uses those same values); instance
norm; layer norm and RMS norm over rows of 4096; group norm with 8 groups. Outputs are O(1), so
the errors are absolute and relative at once.
"""
import argparse
import json
import warnings

import numpy as np

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

SHAPE = (16, 32, 64, 64)  # N, C, H, W: 2**21 values
ROW = 4096  # layer norm / RMS norm rows: SHAPE reshaped to (-1, ROW)
GROUPS = 8
EPS = 1e-5


def _naive(x, axes, eps=EPS, rms=False):
    """One pass in float32: E[x] and E[x^2] from float32 sums."""
    f = np.float32
    ex2 = np.mean(x * x, axis=axes, dtype=f, keepdims=True)
    if rms:
        return (x / np.sqrt(ex2 + f(eps))).astype(f)
    ex = np.mean(x, axis=axes, dtype=f, keepdims=True)
    var = np.maximum(ex2 - ex * ex, f(0))
    return ((x - ex) / np.sqrt(var + f(eps))).astype(f)


def _cases(x, torch):
    """{op: (exact, fastnorm, torch or None, naive)}."""
    C = x.shape[1]
    rows = x.reshape(-1, ROW)
    xg = x.reshape(x.shape[0], GROUPS, -1)
    bn_axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    rm = x64.mean(axis=bn_axes).astype(np.float32)
    rv = x64.var(axis=bn_axes).astype(np.float32)
    cshape = (1, C) + (1,) * (x.ndim - 2)
    out = {}
    tf = tr = None
    if torch is not None:
        TF = torch.nn.functional
        tx, trows = torch.from_numpy(x), torch.from_numpy(rows)
        tf = {
            "bn_train": lambda: TF.batch_norm(tx, None, None, training=True, eps=EPS),
            "bn_eval": lambda: TF.batch_norm(tx, torch.from_numpy(rm), torch.from_numpy(rv),
                                             training=False, eps=EPS),
            "in": lambda: TF.instance_norm(tx, eps=EPS),
            "ln": lambda: TF.layer_norm(trows, (ROW,), eps=EPS),
            "gn": lambda: TF.group_norm(tx, GROUPS, eps=EPS),
            "rms": lambda: TF.rms_norm(trows, (ROW,), eps=EPS),
        }
    ops = {
        "bn_train": (R.batch_norm(x, None, None, training=True, eps=EPS),
                     lambda: F.batch_norm(x, None, None, training=True, eps=EPS),
                     lambda: _naive(x, bn_axes)),
        "bn_eval": (R.batch_norm(x, rm, rv, eps=EPS),
                    lambda: F.batch_norm(x, rm, rv, eps=EPS),
                    lambda: ((x - rm.reshape(cshape)) /
                             np.sqrt(rv.reshape(cshape) + np.float32(EPS))).astype(np.float32)),
        "in": (R.instance_norm(x, eps=EPS), lambda: F.instance_norm(x, eps=EPS),
               lambda: _naive(x, tuple(range(2, x.ndim)))),
        "ln": (R.layer_norm(rows, ROW, eps=EPS), lambda: F.layer_norm(rows, ROW, eps=EPS),
               lambda: _naive(rows, (1,))),
        "gn": (R.group_norm(x, GROUPS, eps=EPS), lambda: F.group_norm(x, GROUPS, eps=EPS),
               lambda: _naive(xg, (2,)).reshape(x.shape)),
        "rms": (R.rms_norm(rows, ROW, eps=EPS), lambda: F.rms_norm(rows, ROW, eps=EPS),
                lambda: _naive(rows, (1,), rms=True)),
    }
    for name, (exact, fast, naive) in ops.items():
        tr = None
        if tf is not None:
            tr = tf[name]().numpy()
        out[name] = (exact, fast(), tr, naive())
    return out


def _err(y, exact):
    if y is None:
        return None
    assert y.dtype == np.float32 and y.shape == exact.shape
    if not np.all(np.isfinite(y)):
        return float("inf")
    return float(np.max(np.abs(y.astype(np.float64) - exact)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offsets", default="0,1e2,1e3,1e4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the table to this file")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    offsets = [float(o) for o in args.offsets.split(",")]
    rng = np.random.default_rng(args.seed)
    z = rng.standard_normal(SHAPE)
    results = []
    for off in offsets:
        x = (off + z).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cases = _cases(x, torch)
        for name, (exact, fast, tr, naive) in cases.items():
            results.append({"op": name, "offset": off, "fastnorm": _err(fast, exact),
                            "torch": _err(tr, exact), "naive_f32": _err(naive, exact)})

    fmt = lambda v: "n/a" if v is None else f"{v:.2e}"
    tv = f"torch {torch.__version__}" if torch is not None else "torch (not installed)"
    print(f"max |y - y_exact|, float32, data = offset + N(0, 1), shape {SHAPE} "
          f"(ln/rms: rows of {ROW}), eps {EPS:g}")
    print(f"fastnorm {fastnorm.__version__}, {tv}, numpy {np.__version__}")
    print()
    print(f"| {'op':8s} | {'offset':>6s} | {'fastnorm':>9s} | {'torch':>9s} | {'naive f32':>9s} |")
    print(f"|{'-' * 10}|{'-' * 8}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
    for r in results:
        print(f"| {r['op']:8s} | {r['offset']:>6g} | {fmt(r['fastnorm']):>9s} | "
              f"{fmt(r['torch']):>9s} | {fmt(r['naive_f32']):>9s} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": SHAPE, "row": ROW, "eps": EPS, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
