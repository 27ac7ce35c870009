"""float16 and bfloat16 inputs (ml_dtypes' bfloat16; skipped without it) on the anchor shapes:
fastnorm (``out=``, float32 parameters) must be faster than torch's half-precision CPU op
(parameters in the input's dtype), and at 16 MB of half-precision input and more at least 1.6x
faster than fastnorm's own float32 path on the same shape (half the bytes to move). The
speed assertions use conftest.py's ``check_ratio`` (bench_ratios.py's method); under
--benchmark-disable each case is built, checked once against torch and skipped."""
import dataclasses

import numpy as np
import pytest

import fastnorm.functional as F

HALF_MB = 16  # the float32 comparison applies from this many MB of half-precision input


def _dtype(name):
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)


def _params(x, op):
    C = x.shape[-1] if op == "layer_norm" else x.shape[1]
    rng = np.random.default_rng(1000 + C)
    w, b, rm = (rng.standard_normal(C).astype(np.float32) for _ in range(3))
    return w, b, rm, (np.abs(rng.standard_normal(C)) + 0.5).astype(np.float32)


def _fastnorm(case, x):
    """fastnorm's call of the anchor case on x (float32 parameters), writing to a fixed out."""
    w, b, rm, rv = _params(x, case.op)
    out = np.empty_like(x)
    if case.op == "batch_norm":
        train = case.mode == "train"
        return lambda: F.batch_norm(x, rm, rv, w, b, train, out=out)
    if case.op == "layer_norm":
        return lambda: F.layer_norm(x, x.shape[-1], w, b, out=out)
    if case.op == "group_norm":
        return lambda: F.group_norm(x, 32, w, b, out=out)
    return lambda: F.instance_norm(x, out=out)


def _torch(torch, case, x):
    """torch's call on x in half precision, parameters in the same dtype."""
    TF = torch.nn.functional
    tdt = torch.float16 if x.dtype == np.float16 else torch.bfloat16
    tx = torch.from_numpy(np.asarray(x, np.float32)).to(tdt)
    w, b, rm, rv = (torch.from_numpy(a).to(tdt) for a in _params(x, case.op))
    if case.op == "batch_norm":
        return lambda: TF.batch_norm(tx, rm, rv, w, b, case.mode == "train")
    if case.op == "layer_norm":
        return lambda: TF.layer_norm(tx, (x.shape[-1],), w, b)
    if case.op == "group_norm":
        return lambda: TF.group_norm(tx, 32, w, b)
    return lambda: TF.instance_norm(tx)


@pytest.mark.cases("anchors")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_faster_than_torch_half(case, dtype, torch, check_ratio):
    x = case.input().astype(_dtype(dtype))
    fast, other = _fastnorm(case, x), _torch(torch, case, x)
    got, want = fast().astype(np.float32), other().float().numpy()
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 0.02 * scale, "fastnorm and torch disagree"
    check_ratio(dataclasses.replace(case, dtype=dtype), fast, other, 1.0,
                what=f"torch {dtype}")


@pytest.mark.cases("anchors")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_faster_than_float32(case, dtype, check_ratio):
    x32 = case.input()
    if x32.size * 2 < HALF_MB * 1e6:
        pytest.skip(f"below {HALF_MB} MB in half precision")
    x = x32.astype(_dtype(dtype))
    fast, other = _fastnorm(case, x), _fastnorm(case, x32)
    check_ratio(dataclasses.replace(case, dtype=dtype), fast, other, 1.6,
                what="fastnorm float32")
