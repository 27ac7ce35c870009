"""add_layer_norm / add_rms_norm (the residual add fused into the norm). At 12 MB and more it
must be at least 1.5x faster than ``x + r`` followed by fastnorm's own layer_norm / rms_norm
(both writing the same out=), and not slower than ONNX Runtime's com.microsoft
SkipLayerNormalization / SkipSimplifiedLayerNormalization (a one-node model, 2 threads,
returning the output and the sum, as fastnorm does here with sum_out). Speed assertions by
conftest.py's ``check_ratio``; under --benchmark-disable each case is built, checked and skipped.
Both sides write to memory they reuse: fastnorm to preallocated out= and sum_out=, ONNX Runtime
to the buffers its arena keeps between runs."""
import dataclasses
import importlib.util
import pathlib

import numpy as np
import pytest

import fastnorm.functional as F

MIN_MB = 12  # the unfused comparison applies from this many MB of input
SHAPES = [(32, 128, 768), (16, 512, 1024), (4096, 4096)]
CASES = ([{"op": "add_layer_norm", "shape": s} for s in SHAPES]
         + [{"op": "add_layer_norm", "shape": (32, 128, 768), "dtype": "float16"}])
OPS = {"layer": (F.add_layer_norm, F.layer_norm), "rms": (F.add_rms_norm, F.rms_norm)}


def _inputs(case, kind):
    x = dataclasses.replace(case, dtype="float32").input().astype(case.dtype)
    r = np.random.default_rng(7).standard_normal(x.shape, dtype=np.float32).astype(x.dtype)
    L = x.shape[-1]
    rng = np.random.default_rng(L)
    w, b = (rng.standard_normal(L).astype(x.dtype) for _ in range(2))
    args = (w, 1e-5) if kind == "rms" else (w, b, 1e-5)
    return x, r, L, args


@pytest.mark.cases(CASES)
@pytest.mark.parametrize("kind", list(OPS))
def test_fused_vs_add_then_norm(case, kind, check_ratio):
    x, r, L, args = _inputs(case, kind)
    if x.nbytes < MIN_MB * 1e6:
        pytest.skip(f"below {MIN_MB} MB")
    fused, norm = OPS[kind]
    out = np.empty_like(x)
    fast = lambda: fused(x, r, L, *args, out=out)  # noqa: E731
    other = lambda: norm(x + r, L, *args, out=out)  # noqa: E731
    assert np.array_equal(fast(), other()), "fused and unfused differ"
    check_ratio(dataclasses.replace(case, op=f"add_{kind}_norm"), fast, other, 1.5,
                what="x + r then norm")


def _ort():
    spec = importlib.util.spec_from_file_location(
        "_ort_skip", pathlib.Path(__file__).resolve().parents[1] / "tests" / "ort_skip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.skip_norm_session


@pytest.mark.cases(CASES)
@pytest.mark.parametrize("kind", list(OPS))
def test_not_slower_than_onnxruntime(case, kind, check_ratio):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    x, r, L, args = _inputs(case, kind)
    fused = OPS[kind][0]
    sess = _ort()(kind == "rms", x.shape, args[0], None if kind == "rms" else args[1])
    out, so = np.empty_like(x), np.empty_like(x)
    fast = lambda: fused(x, r, L, *args, out=out, sum_out=so)  # noqa: E731
    other = lambda: sess(x, r)  # noqa: E731
    (y, s), (oy, os_) = fast(), other()
    assert np.array_equal(s, os_), "sums differ"
    tol = 1e-4 if x.dtype == np.float32 else 2e-2
    assert np.abs(y.astype(np.float64) - oy).max() <= tol * max(1, np.abs(oy).max())
    check_ratio(dataclasses.replace(case, op=f"add_{kind}_norm"), fast, other, 1.0,
                what="onnxruntime")
