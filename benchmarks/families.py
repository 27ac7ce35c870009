"""fastnorm against torch CPU and ONNX Runtime CPU on the shape families of real models
(fastnorm/_cases.py FAMILIES: ResNet-50 eval/train BatchNorm, transformer decode/prefill
LayerNorm and RMSNorm, diffusion GroupNorm, style-transfer InstanceNorm, vision-transformer /
ConvNeXt LayerNorm over few channels; both layouts where the
family has them; --extra for further real-model shapes outside the families, _cases.EXTRA;
--random N for N shapes drawn from real-model ranges, _cases.random_cases; --f64 for float64:
the float64 set, or the --extra / --random shapes in float64).

    python benchmarks/families.py [--family NAME ... | --extra | --random N [--seed S]] [--f64]
                                  [--quick] [--rounds N] [--json FILE]

Every peer allocates its result, and so does the "fastnorm" column (as users call it); the
"out=" column reuses one output. Ratios are peer time / fastnorm time from this one run (> 1:
fastnorm is faster), with geometric means per family and overall. Peers run one after the other
in this process, in N interleaved rounds (the median over rounds is kept), each after a short
pause so that the worker threads of the one before (torch's OpenMP pool, ONNX Runtime's) have
stopped spinning; ONNX Runtime runs a one-node model with as many intra-op threads as torch and
no spinning, on a C-order copy of the input (it takes no other layout).
"""
import argparse
import json
import math
import statistics
import sys
import time

import numpy as np

import fastnorm
from fastnorm import _cases

ORT_OPS = {  # case name -> (ONNX op, opset, inputs after x)
    "bn_eval": ("BatchNormalization", 15, ("weight", "bias", "running_mean", "running_var")),
    "ln": ("LayerNormalization", 17, ("weight", "bias")),
    "rms": ("RMSNormalization", 23, ("weight",)),
    "gn32": ("GroupNormalization", 21, ("weight", "bias")),
    "in": ("InstanceNormalization", 15, ("weight", "bias")),
}


def ort_call(name, x, kw, threads):
    """A zero-argument callable running the case as a one-node ONNX model, or None."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    if name not in ORT_OPS:
        return None
    op, opset, names = ORT_OPS[name]
    C = x.shape[-1] if name in ("ln", "rms") else x.shape[1]
    arrays = dict(kw)
    if name == "in":  # ONNX's InstanceNormalization requires scale and bias
        arrays = {"weight": np.ones(C, x.dtype), "bias": np.zeros(C, x.dtype)}
    elem = TensorProto.FLOAT if x.dtype == np.float32 else TensorProto.DOUBLE
    inits = [numpy_helper.from_array(np.ascontiguousarray(arrays[n], x.dtype), n) for n in names]
    attrs = {"epsilon": 1e-5}
    if name in ("ln", "rms"):
        attrs["axis"] = -1
    if name == "gn32":
        attrs["num_groups"] = 32
    node = helper.make_node(op, ["x", *names], ["y"], **attrs)
    vi = lambda n: helper.make_tensor_value_info(n, elem, list(x.shape))  # noqa: E731
    graph = helper.make_graph([node], "g", [vi("x")], [vi("y")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
    except Exception:  # an op or dtype this ONNX Runtime lacks
        return None
    xc = np.ascontiguousarray(x)
    return lambda: sess.run(None, {"x": xc})


def case_calls(name, shape, layout, dtype, torch, threads):
    """{peer: zero-argument callable} for one case."""
    op, mode = _cases.OPS[name]
    x = _cases.make_input(shape, dtype, layout)
    kw = _cases.op_kwargs(op, mode, x)
    f = getattr(fastnorm.functional, op)
    out = np.empty_like(x)
    calls = {"fastnorm": lambda: f(x, **kw), "fastnorm_out": lambda: f(x, **kw, out=out)}
    if torch is not None:
        tkw = {k: torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v
               for k, v in _cases.op_kwargs(op, mode, x).items()}
        tx = torch.from_numpy(x)
        if layout == "channels_last" and x.ndim == 4:  # same memory: a channels_last tensor
            assert tx.is_contiguous(memory_format=torch.channels_last)
        tf = getattr(torch.nn.functional, op)
        calls["torch"] = lambda: tf(tx, **tkw)
    params = {k: v for k, v in kw.items() if isinstance(v, np.ndarray)}
    o = ort_call(name, x, params, threads)
    if o is not None:
        calls["ort"] = o
    return x, calls


def timed(fn, budget=0.2):
    time.sleep(0.03)  # let the previous peer's worker threads stop spinning
    return _cases.median_time(fn, rounds=7, budget=budget)


def timed_rounds(calls, rounds):
    """{peer: ms}: each peer timed once per round, the order rotated from round to round, and
    the median over the rounds kept, so that a drift of the machine (these shared VMs change
    speed from minute to minute) does not land on one peer alone."""
    names = list(calls)
    got = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            got[k].append(timed(calls[k], budget=0.2 / rounds) * 1e3)
    return {k: statistics.median(v) for k, v in got.items()}


def geomean(v):
    return math.exp(sum(map(math.log, v)) / len(v)) if v else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--family", action="append", choices=sorted(_cases.FAMILIES))
    ap.add_argument("--f64", action="store_true",
                    help="float64: the float64 set, or the --extra / --random shapes")
    which.add_argument("--extra", action="store_true",
                    help="further real-model shapes outside the families instead (float32)")
    which.add_argument("--random", type=int, metavar="N",
                    help="N cases drawn at random from real-model ranges instead "
                         "(_cases.random_cases; float64 with --f64)")
    ap.add_argument("--seed", type=int, default=0, help="the --random draw (default 0)")
    ap.add_argument("--quick", action="store_true", help="every third case")
    ap.add_argument("--smoke", action="store_true",
                    help="call every peer of every case once, no timing (CI's check that the "
                         "script runs)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved timing rounds per case (median kept; default 3)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    threads = fastnorm.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    dtype = "float64" if args.f64 else "float32"
    if args.random is not None:
        plan = {"random": _cases.random_cases(args.random, args.seed,
                                              np.dtype(dtype).itemsize)}
    elif args.f64:
        plan = {"float64": _cases.FAMILIES_F64}
    elif args.extra:
        plan = {"extra": _cases.EXTRA}
    else:
        plan = {k: v for k, v in _cases.FAMILIES.items() if not args.family or k in args.family}
    print(f"fastnorm {fastnorm.__version__}, {threads} threads; torch "
          f"{getattr(torch, '__version__', 'absent')}; {dtype}; ratios = peer / fastnorm "
          f"(allocating calls), > 1: fastnorm faster", flush=True)
    rows, summary = [], {}
    for family, cases in plan.items():
        if args.quick:
            cases = cases[::3]
        fam = {"torch": [], "ort": []}
        for name, shape, layout in cases:
            x, calls = case_calls(name, shape, layout, dtype, torch, threads)
            if args.smoke:
                for fn in calls.values():
                    fn()
                print(f"{family:9s} {name:8s} {layout:13s} {shape}: {', '.join(calls)} ran")
                continue
            ms = timed_rounds(calls, args.rounds)
            r = {k: ms[k] / ms["fastnorm"] for k in ("torch", "ort") if k in ms}
            for k, v in r.items():
                fam[k].append(v)
            rows.append({"family": family, "op": name, "shape": list(shape), "layout": layout,
                         "mb": x.nbytes / 1e6, "ms": ms, "ratios": r,
                         "alloc_over_out": ms["fastnorm"] / ms["fastnorm_out"]})
            lay = "nhwc" if layout == "channels_last" else "    "
            print(f"{family:9s} {name:8s} {lay} {str(shape):22s} {x.nbytes / 1e6:7.1f}MB "
                  + " ".join(f"{k}={v:8.4f}ms" for k, v in ms.items())
                  + "  " + " ".join(f"{k}/fn={v:5.2f}" for k, v in r.items())
                  + f"  alloc/out={rows[-1]['alloc_over_out']:.2f}", flush=True)
            del x, calls
        summary[family] = {k: (geomean(v), min(v), len(v)) for k, v in fam.items() if v}
    if args.smoke:
        return 0
    allr = {k: [r["ratios"][k] for r in rows if k in r["ratios"]] for k in ("torch", "ort")}
    for family, s in summary.items():
        print(f"{family:9s} " + "  ".join(f"{k}: geomean {g:.2f} min {m:.2f} ({n})"
                                          for k, (g, m, n) in s.items()))
    print("overall   " + "  ".join(f"{k}: geomean {geomean(v):.2f} min {min(v):.2f} ({len(v)})"
                                   for k, v in allr.items() if v))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
