"""``python -m fastnorm``: run every layer on a few fixed shapes, check each result against
``fastnorm.reference`` (float64) and print a table of fastnorm vs plain NumPy time (and vs PyTorch
CPU when it is installed).

    python -m fastnorm [--quick | --large] [--dtype float32|float64] [--threads N]

Like is compared with like: the "fastnorm" column is the allocating call, as NumPy's and torch's
are (the ratios use it); the "out=" column is fastnorm writing into a preallocated array. The
NumPy column is ``fastnorm.reference`` evaluated in the input's dtype: the same plain formula a
NumPy user writes. All peers are timed in one process, one after the other for each case, each
time the median of several rounds; ratios from one run are what to compare (absolute times vary
with the machine).
``--large`` runs 1 GiB-class inputs instead (several GB of memory: the float64 check) and
adds the time of a plain copy of the input into the output (``np.copyto``): the memory-bandwidth
floor of any one-pass op. Exits with status 1 if any result is off the reference.
"""
import argparse
import sys

import numpy as np

import fastnorm
from fastnorm import _cases
from fastnorm import reference as ref

# the anchor shapes (the project's benchmark shapes, fastnorm/_cases.py) and an RMSNorm case
CASES = _cases.ANCHORS + _cases.RMS[:1]
QUICK = {1, 4, 5, 7, 9, 11, 12}  # indices kept by --quick


def label(name, shape):
    """The layer a case stands for, e.g. "BatchNorm2d train"."""
    nd = len(shape)
    if name.startswith("bn_"):
        return f"BatchNorm{max(1, nd - 2)}d {name[3:]}"
    return {"ln": "LayerNorm", "gn32": "GroupNorm(32)", "in": f"InstanceNorm{nd - 2}d",
            "rms": "RMSNorm"}[name]


def make_case(name, x, torch):
    """(fast, slow, peer): fastnorm.functional(**k), reference(**k) and torch (or None) callables
    of the case's op, each with its own copy of the arguments (running statistics are updated
    in place)."""
    op, mode = _cases.OPS[name]
    fast_kw, slow_kw = _cases.op_kwargs(op, mode, x), _cases.op_kwargs(op, mode, x)
    fast = lambda **k: getattr(fastnorm.functional, op)(x, **fast_kw, **k)  # noqa: E731
    slow = lambda **k: getattr(ref, op)(x, **slow_kw, **k)  # noqa: E731
    if torch is None:
        return fast, slow, None
    t = torch.from_numpy
    tx = t(x)
    tkw = {k: t(v) if isinstance(v, np.ndarray) else v
           for k, v in _cases.op_kwargs(op, mode, x).items()}
    tf = getattr(torch.nn.functional, op)
    return fast, slow, lambda: tf(tx, **tkw)


def positive_int(text):
    """--threads: an int of at least 1 (argparse then reports anything else as a usage error)."""
    n = int(text)
    if n < 1:
        raise ValueError(text)
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastnorm", description=__doc__.split("\n\n")[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    size.add_argument("--large", action="store_true",
                      help="1 GiB-class inputs, with a plain copy's time for scale")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="fastnorm threads (default: all)")
    args = ap.parse_args(argv)
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch, torch_version = None, "not installed"
    if args.threads is not None:
        fastnorm.set_num_threads(args.threads)
    cfg = fastnorm.get_config()
    dt = np.dtype(args.dtype)
    tol = _cases.TOL[dt]
    print(f"fastnorm {cfg['version']} (OpenMP {'on' if cfg['openmp'] else 'OFF'}, "
          f"{fastnorm.get_num_threads()} threads), NumPy {np.__version__}, torch {torch_version}; "
          f"{args.dtype}; times are medians; ratios compare allocating calls (fastnorm without "
          f"out=), > 1 means fastnorm is faster")
    cols = ["numpy", "fastnorm"] + (["torch"] if torch else []) + ["out="]
    cols += ["copy"] if args.large else []
    head = (f"{'layer':18s} {'shape':20s} {'max|err|':>9s} " + " ".join(f"{c + ' ms':>11s}" for c in cols)
            + f" {'vs numpy':>9s}" + (f" {'vs torch':>9s}" if torch else ""))
    print(head)
    print("-" * len(head))
    ok, speed_np, speed_t = True, [], []
    for i, (name, shape) in enumerate(_cases.LARGE if args.large else CASES):
        if args.quick and i not in QUICK:
            continue
        x = _cases.make_input(shape, dt)
        fast, slow, peer = make_case(name, x, torch)
        got, want = fast(), slow()
        err = float(np.max(np.abs(got - want)))
        ok &= got.dtype == dt and err <= tol
        out = np.empty_like(x)
        fns = {"fastnorm": fast, "out=": lambda: fast(out=out), "numpy": lambda: slow(dtype=dt),
               "torch": peer, "copy": lambda: np.copyto(out, x)}
        ms = {k: _cases.median_time(fns[k]) * 1e3 for k in cols}
        speed_np.append(ms["numpy"] / ms["fastnorm"])
        line = (f"{label(name, shape):18s} {str(shape):20s} {err:9.1e} "
                + " ".join(f"{ms[c]:11.4f}" for c in cols) + f" {speed_np[-1]:8.1f}x")
        if torch:
            speed_t.append(ms["torch"] / ms["fastnorm"])
            line += f" {speed_t[-1]:8.2f}x"
        print(line + ("" if err <= tol else "   <-- OFF THE REFERENCE"), flush=True)
    gm = lambda v: float(np.exp(np.mean(np.log(v))))
    print(f"geometric mean speedup: {gm(speed_np):.1f}x vs NumPy"
          + (f", {gm(speed_t):.2f}x vs torch (min {min(speed_t):.2f}x)" if torch else ""))
    print("all results match the float64 reference" if ok else
          f"SOME RESULTS DO NOT MATCH THE REFERENCE (tolerance {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
