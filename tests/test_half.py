"""float16 and bfloat16 (ml_dtypes) inputs: every op and layer, against the float64 reference on
the same (rounded) input within 1 ulp of the output dtype, against torch's half-precision CPU ops
within 2 ulp, over the awkward inputs; float16 without ml_dtypes; the dtype errors."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from fastnorm import reference as R

from awkward import awkward_inputs

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # float16 still runs
    ml_dtypes, BF16 = None, None

HALF = [np.dtype(np.float16)] + ([BF16] if BF16 is not None else [])
HALF_IDS = [d.name for d in HALF]
MANTISSA = {"float16": 11, "bfloat16": 8}  # significand bits, the implicit one included


def ulps(got, want, dtype):
    """|got - want| in ulps of dtype at |want|; values below 1/256 of the largest |want| are
    judged at the ulp of that floor (an affine output near 0 is the difference of terms of the
    output's scale, computed in float: its error is relative to them, not to itself)."""
    w = np.asarray(want, np.float64)
    fin = np.isfinite(w)
    scale = np.max(np.abs(w[fin])) if fin.any() else 1.0
    mag = np.maximum(np.abs(w), max(scale / 256, 2.0 ** -14))
    ulp = 2.0 ** (np.floor(np.log2(mag)) - (MANTISSA[np.dtype(dtype).name] - 1))
    return np.abs(np.asarray(got, np.float64) - w) / ulp


def assert_ulp(got, want, dtype, max_ulp, label=""):
    """Same dtype and shape, NaN and inf where want has them, finite values within max_ulp."""
    dtype = np.dtype(dtype)
    assert got.dtype == dtype, f"{label}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"{label}: shape {got.shape}, expected {want.shape}"
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.array_equal(np.isnan(g), np.isnan(w)), f"{label}: NaN positions differ"
    inf = np.isinf(w)
    assert np.array_equal(g[inf], w[inf]), f"{label}: inf values differ"
    # the reference rounded to dtype may overflow where it is finite: compare as dtype does
    fin = np.isfinite(w) & np.isfinite(w.astype(dtype).astype(np.float64))
    if fin.any():
        err = ulps(g[fin], w[fin], dtype).max()
        assert err <= max_ulp, f"{label}: {err:.2f} ulp > {max_ulp}"


def _params(n, dtype, seed=1):
    """weight, bias (float32 or the input's dtype alternately) and running stats."""
    rng = np.random.default_rng(seed)
    w, b, rm = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    rv = (np.abs(rng.standard_normal(n)) + 0.5).astype(np.float32)
    if seed % 2:  # parameters in the input's dtype, as torch's half layers hold them
        w, b, rm, rv = (a.astype(dtype) for a in (w, b, rm, rv))
    return w, b, rm, rv


def _ops(shape, dtype, seed):
    """(name, fastnorm call, reference call, whether it fits the op's shape needs)."""
    C, L = shape[1], shape[-1]
    w, b, rm, rv = _params(C, dtype, seed)
    lw, lb, _, _ = _params(L, dtype, seed)
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    return [
        ("bn-train", lambda x: F.batch_norm(x, None, None, w, b, training=True),
         lambda x: R.batch_norm(x, None, None, f64(w), f64(b), training=True)),
        ("bn-eval", lambda x: F.batch_norm(x, rm, rv, w, b),
         lambda x: R.batch_norm(x, f64(rm), f64(rv), f64(w), f64(b))),
        ("in", lambda x: F.instance_norm(x, weight=w, bias=b),
         lambda x: R.instance_norm(x, weight=f64(w), bias=f64(b))),
        ("gn", lambda x: F.group_norm(x, 2, w, b), lambda x: R.group_norm(x, 2, f64(w), f64(b))),
        ("ln", lambda x: F.layer_norm(x, L, lw, lb), lambda x: R.layer_norm(x, L, f64(lw), f64(lb))),
        ("rms", lambda x: F.rms_norm(x, L, lw, 1e-5), lambda x: R.rms_norm(x, L, f64(lw), 1e-5)),
        # eps=None: float32's machine epsilon, as torch (the reference sees float64 input)
        ("rms-eps-none", lambda x: F.rms_norm(x, L),
         lambda x: R.rms_norm(x, L, eps=fastnorm._checks.rms_eps(dtype))),
    ]


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
# (2, 2602, 3, 5): channels-last rows whose coefficients go in column chunks
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 4, 1, 33), (1, 2, 7), (2, 2602, 3, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_awkward_inputs_within_one_ulp_of_float64(dtype, shape):
    n = 0
    for seed in (1, 2):
        for name, fast, ref in _ops(shape, dtype, seed):
            for label, x in awkward_inputs(shape, dtype, seed):
                want = ref(np.asarray(x, np.float64))
                assert_ulp(fast(x), want, dtype, 1, f"{name} {label}")
                n += 1
    assert n > 100


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_empty_and_size_one_axes(dtype):
    for shape in [(0, 3, 4), (2, 3, 0), (1, 3, 1), (2, 1, 5)]:
        x = np.ones(shape, dtype)
        for name, fast, ref in _ops(shape, dtype, 1):
            if name == "bn-train" and shape[0] * shape[2] <= 1:
                continue
            if name == "in" and shape[2] <= 1:
                continue
            if name == "gn":
                continue  # 2 groups need an even channel count
            assert_ulp(fast(x), ref(np.asarray(x, np.float64)), dtype, 1, f"{name} {shape}")


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_out_and_running_stats_in_the_input_dtype(dtype):
    x = (np.random.default_rng(0).standard_normal((8, 3, 5)) * 2 + 1).astype(dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    rm64, rv64 = np.zeros(3), np.ones(3)
    out = np.empty_like(x)
    assert F.batch_norm(x, rm, rv, training=True, out=out) is out
    R.batch_norm(np.asarray(x, np.float64), rm64, rv64, training=True)
    assert rm.dtype == dtype and rv.dtype == dtype
    assert np.array_equal(rm, rm64.astype(dtype)) and np.array_equal(rv, rv64.astype(dtype))
    assert F.layer_norm(x, 5, out=x) is x  # in place


def _torch_dtype(torch, dtype):
    return torch.float16 if dtype == np.float16 else torch.bfloat16


def _to_torch(torch, a):
    if a.dtype.name == "bfloat16":  # torch.from_numpy has no bfloat16
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def assert_near_torch(got, want_torch, want64, dtype, label):
    """Within 2 ulp of torch's half-precision result, or, where torch's own result is more than
    1 ulp off the float64 one (its batch_norm in training: about 11 ulp, where torch's float32
    path rounded to half is within 0.5), closer to the float64 result than torch is."""
    torch_err = ulps(want_torch, want64, dtype).max()
    if torch_err <= 1:
        assert_ulp(got, want_torch, dtype, 2, f"{label} vs torch")
    else:
        assert_ulp(got, want64, dtype, 1, f"{label} vs float64")
        assert ulps(got, want64, dtype).max() < torch_err, label


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_near_torch_half_ops(torch, dtype):
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 8, 6, 10)) * 2 + 0.5).astype(dtype)
    x64 = np.asarray(x, np.float64)
    w, b, rm, rv = _params(8, dtype, 1)  # parameters in the input's dtype, as torch wants
    lw, lb, _, _ = _params(10, dtype, 1)
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    t = lambda a: _to_torch(torch, a)  # noqa: E731
    cases = [
        ("bn-train", F.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True),
         TF.batch_norm(t(x), t(rm.copy()), t(rv.copy()), t(w), t(b), True),
         R.batch_norm(x64, None, None, f64(w), f64(b), training=True)),
        ("bn-eval", F.batch_norm(x, rm, rv, w, b), TF.batch_norm(t(x), t(rm), t(rv), t(w), t(b)),
         R.batch_norm(x64, f64(rm), f64(rv), f64(w), f64(b))),
        ("in", F.instance_norm(x), TF.instance_norm(t(x)), R.instance_norm(x64)),
        ("gn", F.group_norm(x, 4, w, b), TF.group_norm(t(x), 4, t(w), t(b)),
         R.group_norm(x64, 4, f64(w), f64(b))),
        ("ln", F.layer_norm(x, 10, lw, lb), TF.layer_norm(t(x), (10,), t(lw), t(lb)),
         R.layer_norm(x64, 10, f64(lw), f64(lb))),
        ("rms", F.rms_norm(x, 10, lw), TF.rms_norm(t(x), (10,), t(lw)),
         R.rms_norm(x64, 10, f64(lw), eps=fastnorm._checks.rms_eps(dtype))),
    ]
    for name, got, want, want64 in cases:
        assert want.dtype == _torch_dtype(torch, dtype)
        assert_near_torch(got, want.float().numpy().astype(np.float64), want64, dtype, name)


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_rms_eps_none_is_float32s_epsilon_as_torch(torch, dtype):
    """eps=None with 16-bit input: torch's CPU rms_norm adds float32's epsilon (1.2e-7), not the
    input's (float16 9.8e-4, bfloat16 7.8e-3): rows whose mean square is near those differ
    (0.004 everywhere: 0.996 against 0.127 or 0.045)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 16)) * np.array([[4e-3], [1e-2], [3e-2], [1e-3], [1.0], [0]])
         ).astype(dtype)
    r = (rng.standard_normal((6, 16)) * 1e-3).astype(dtype)
    tdt = _torch_dtype(torch, dtype)
    TF = torch.nn.functional
    t = lambda a: _to_torch(torch, a)  # noqa: E731
    s = (np.asarray(x, np.float32) + np.asarray(r, np.float32)).astype(dtype)  # rounded sum
    m = fastnorm.RMSNorm(16, dtype=dtype)
    cases = [
        ("functional", F.rms_norm(x, 16), TF.rms_norm(t(x), (16,)), x),
        ("layer", m(x), torch.nn.RMSNorm(16, dtype=tdt)(t(x)).detach(), x),
        ("native", F.native_rms_norm(x, 16, None, None)[0], TF.rms_norm(t(x), (16,)), x),
        ("add", F.add_rms_norm(x, r, 16), TF.rms_norm(t(s), (16,)), s),
    ]
    for name, got, want, inp in cases:
        want64 = R.rms_norm(np.asarray(inp, np.float64), 16, eps=np.finfo(np.float32).eps)
        assert_near_torch(got, want.float().numpy().astype(np.float64), want64, dtype, name)
        assert np.abs(np.asarray(got[0], np.float64)).max() > 0.5, name  # not eps-dominated
    assert fastnorm._checks.rms_eps(dtype) == np.finfo(np.float32).eps
    assert R.rms_norm(x, 16).tobytes() == R.rms_norm(x, 16, eps=np.finfo(np.float32).eps).tobytes()


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_layers(torch, dtype):
    """Layers built with dtype= hold parameters in it, normalize like the functions and load a
    torch checkpoint of that dtype."""
    x = (np.random.default_rng(0).standard_normal((4, 6, 5)) * 2 + 1).astype(dtype)
    tdt = _torch_dtype(torch, dtype)
    ln = fastnorm.LayerNorm(5, dtype=tdt)
    assert ln.weight.dtype == dtype
    assert np.array_equal(ln(x), F.layer_norm(x, 5, ln.weight, ln.bias), equal_nan=True)
    bn = fastnorm.BatchNorm1d(6, dtype=dtype)
    tbn = torch.nn.BatchNorm1d(6, dtype=tdt)
    with torch.no_grad():
        tbn.weight.uniform_(0.5, 2.0)
    bn.load_state_dict(tbn.state_dict())
    assert bn.weight.dtype == dtype
    y, ty = bn(x), tbn(_to_torch(torch, x))
    want64 = R.batch_norm(np.asarray(x, np.float64), None, None, bn.weight.astype(np.float64),
                          bn.bias.astype(np.float64), training=True)
    assert_near_torch(y, ty.detach().float().numpy().astype(np.float64), want64, dtype,
                      "BatchNorm1d")
    assert bn.running_mean.dtype == dtype
    assert_ulp(bn.running_var, tbn.running_var.float().numpy().astype(np.float64), dtype, 1,
               "running_var")
    for layer in (fastnorm.GroupNorm(2, 6, dtype=dtype), fastnorm.InstanceNorm1d(6),
                  fastnorm.RMSNorm(5, dtype=dtype)):
        assert layer(x).dtype == dtype, type(layer).__name__
    x4 = x.reshape(4, 6, 5, 1).repeat(2, axis=3)
    assert fastnorm.SwitchNorm2d(6, dtype=dtype)(x4).dtype == dtype


def test_threads_do_not_change_bits():
    for dtype in HALF:
        x = np.random.default_rng(0).standard_normal((16, 8, 4096)).astype(dtype)
        calls = [lambda: F.layer_norm(x, 4096), lambda: F.group_norm(x, 4),
                 lambda: F.batch_norm(x, None, None, training=True),
                 lambda: F.batch_norm(np.moveaxis(x, 1, 2), None, None, training=True)]
        fastnorm.set_num_threads(1)
        one = [c() for c in calls]
        fastnorm.set_num_threads(2)
        for a, c in zip(one, calls):
            assert np.array_equal(a.view(np.uint16), c().view(np.uint16))


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_half_parameters_equal_their_float32_values(dtype):
    """16-bit weights and biases are widened to float32 by fastnorm's own conversion: every
    value, subnormals, signed zeros, inf and NaN included, as NumPy converts it, and in any
    layout (strided, byte-swapped: NumPy's cast)."""
    bits = np.arange(0, 65536, 7, dtype=np.uint16)  # every exponent, both signs, NaN payloads
    special = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x7C00, 0xFC00, 0x7E00],
                       np.uint16) if dtype == np.float16 else \
        np.array([0x0000, 0x8000, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC0], np.uint16)
    w = np.concatenate([bits, special]).view(dtype)
    n = w.size
    x = np.random.default_rng(0).standard_normal((3, n)).astype(dtype)
    for wv in (w, w[::-1], w.astype(w.dtype.newbyteorder(">"))):
        want = F.layer_norm(x, n, wv.astype(np.float32), wv[::-1].astype(np.float32))
        got = F.layer_norm(x, n, wv, wv[::-1])
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_subnormal_outputs_are_rounded_not_flushed(dtype):
    """A weight in the 16-bit type's subnormal range makes subnormal outputs: within one of the
    smallest subnormal steps of the float64 result (AVX-512 BF16's rounding instruction flushes
    them; its loops must not)."""
    step = 2.0 ** -24 if np.dtype(dtype) == np.float16 else 2.0 ** -133  # bfloat16
    x = np.random.default_rng(3).standard_normal((8, 1031)).astype(dtype)
    w = np.full(1031, 40 * step, np.float64).astype(dtype)
    for b in (None, w):  # the weight loops, and the affine loops that run in registers
        y = F.layer_norm(x, 1031, w, b)
        want = R.layer_norm(x.astype(np.float64), 1031, w.astype(np.float64),
                            None if b is None else b.astype(np.float64))
        assert np.count_nonzero(y.astype(np.float64)) > 0.9 * y.size
        assert np.abs(y.astype(np.float64) - want).max() <= step


def test_unsupported_dtypes_name_the_accepted_ones():
    for dt in (np.int32, np.longdouble, np.complex64):
        with pytest.raises(TypeError, match=r"float16, bfloat16 \(ml_dtypes\), float32 or float64"):
            F.layer_norm(np.ones((2, 3), dt), 3)
    with pytest.raises(TypeError, match="dtype must be float16, bfloat16, float32 or float64"):
        fastnorm.LayerNorm(3, dtype=np.int8)


def test_float16_without_ml_dtypes():
    """ml_dtypes is optional: with it unimportable, float16 works and bfloat16 is refused by
    name."""
    script = textwrap.dedent("""
        import sys
        sys.modules["ml_dtypes"] = None  # import ml_dtypes now raises ImportError
        import numpy as np, fastnorm, fastnorm.functional as F
        y = F.layer_norm(np.arange(6, dtype=np.float16).reshape(2, 3), 3)
        assert y.dtype == np.float16 and abs(float(y[0, 2]) - 1.2247) < 1e-3, y
        assert fastnorm.LayerNorm(3, dtype="float16")(y).dtype == np.float16
        try:
            fastnorm.LayerNorm(3, dtype="bfloat16")
        except TypeError as e:
            assert "ml_dtypes" in str(e), e
        else:
            raise AssertionError("bfloat16 accepted without ml_dtypes")
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("ratio", [0.0, 1.0, 3.8, 3.95, 10.0, 300.0])
def test_statistics_either_side_of_the_unshifted_cut(dtype, ratio):
    """The 16-bit statistics sum x itself in float first and keep that only while |mean| is
    within about 3.9 std (lowp_ok); else they sum again, shifted (then in double if need be).
    Rows long enough for the float loops, |mean| / std on both sides of that cut and far from
    it: LayerNorm, InstanceNorm and GroupNorm still within 1 ulp of float64."""
    rng = np.random.default_rng(7)
    x = (ratio + rng.standard_normal((4, 8, 512))).astype(dtype)
    x64 = np.asarray(x, np.float64)
    assert_ulp(F.layer_norm(x, 512), R.layer_norm(x64, 512), dtype, 1, "ln")
    assert_ulp(F.instance_norm(x), R.instance_norm(x64), dtype, 1, "in")
    assert_ulp(F.group_norm(x, 2), R.group_norm(x64, 2), dtype, 1, "gn")


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("scale", [1e-25, 1.0, 1e25])
def test_channels_last_statistics_in_float_or_double(dtype, scale):
    """Channels-last statistics of the 16-bit types sum 16 contiguous columns a vector in float
    and take a tile again in double where lowp_ok rejects a column: squares that overflow or
    underflow float (bfloat16 at 1e25 and 1e-25; float16 cannot get there), a first row far
    from its column's mean. BatchNorm (training), GroupNorm and InstanceNorm within 1 ulp of
    float64."""
    if scale != 1.0 and np.dtype(dtype) == np.float16:
        pytest.skip("float16's squares stay inside float's range")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 8, 8, 48))
    x[1, 0, 0, :] = 300.0  # the first row of sample 1's tiles
    x = np.moveaxis((x * scale).astype(dtype), -1, 1)  # (2, 48, 8, 8), channels-last
    x64 = np.asarray(x, np.float64)
    assert_ulp(F.batch_norm(x, None, None, training=True),
               R.batch_norm(x64, None, None, training=True), dtype, 1, "bn")
    assert_ulp(F.group_norm(x, 4), R.group_norm(x64, 4), dtype, 1, "gn")
    assert_ulp(F.instance_norm(x), R.instance_norm(x64), dtype, 1, "in")


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("C", [16, 40])
def test_channels_last_few_channels_per_sample_coefficients(dtype, C):
    """Channels-last GroupNorm and InstanceNorm with few channels: a unit of rows takes its
    sample's coefficients repeated along the run (normalize_cols, AVX-512); samples with
    different statistics, each within 1 ulp of float64."""
    rng = np.random.default_rng(12)
    scale, shift = np.array([1.0, 3.0, 0.5]), np.array([0.0, 2.0, -1.0])
    x = rng.standard_normal((3, 32, 32, C)) * scale[:, None, None, None] + shift[:, None, None, None]
    x = np.moveaxis(x.astype(dtype), -1, 1)  # (3, C, 32, 32), channels-last
    x64 = np.asarray(x, np.float64)
    assert_ulp(F.group_norm(x, 4), R.group_norm(x64, 4), dtype, 1, "gn")
    assert_ulp(F.instance_norm(x), R.instance_norm(x64), dtype, 1, "in")


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("groups", [32, 16, 8, 6])
def test_channels_last_single_sample_in_units_of_groups(dtype, groups):
    """One channels-last sample of few rows goes in units of whole groups, each summed, merged
    (fn_merge_equal), and normalized on its own (group_cols' single-sample path): groups of
    channels far apart in mean and scale, a first row far from its column's mean, weight and
    bias, and a fused ReLU: within 1 ulp of float64."""
    rng = np.random.default_rng(13)
    C = 768
    scale = np.exp(rng.uniform(-2, 2, C))
    shift = np.repeat(rng.uniform(-4, 4, groups), C // groups)
    x = rng.standard_normal((1, 6, 7, C)) * scale + shift
    x[0, 0, 0, :] += 40.0
    x = np.moveaxis(x.astype(dtype), -1, 1)  # (1, 768, 6, 7), channels-last
    x64 = np.asarray(x, np.float64)
    w = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    want = R.group_norm(x64, groups, np.float64(w), np.float64(b))
    assert_ulp(F.group_norm(x, groups, w, b), want, dtype, 1, "gn")
    assert_ulp(F.group_norm(x, groups, w, b, activation="relu"), np.maximum(want, 0.0), dtype, 1,
               "gn relu")


def test_contiguous_runs_match_strided_with_avx2_loops():
    """The same check with the AVX2 direct loops (FN_SIMD_LEVEL=1: 8 wide, remainders element
    by element), in a subprocess."""
    code = ("import sys; sys.path.insert(0, %r); import numpy as np, test_half as t; "
            "[t.test_contiguous_runs_match_strided_bit_for_bit(d) for d in t.HALF]; print('ok')"
            % os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FN_SIMD_LEVEL="1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


@pytest.mark.parametrize("dtype", HALF, ids=HALF_IDS)
def test_contiguous_runs_match_strided_bit_for_bit(dtype):
    """Contiguous runs take the converting-in-registers loops and, for a short remainder, a
    masked vector (AVX-512 BW) or element-by-element arithmetic; strided runs take the float
    buffer; eval BatchNorm's back-to-back rows of 16 or more, one span across the rows
    (AVX-512 BW). Row lengths 1-40 (every remainder and where rows meet within a vector),
    eval BatchNorm (scale; batch 3 and 1, whose rows are ordered differently), LayerNorm
    (affine) and channels-last eval BatchNorm (per column, unshifted and shifted coefficients):
    the same bits either way. Then eval
    BatchNorm on 7x7 planes whose spans are cut where a thread's unit of rows ends."""
    rng = np.random.default_rng(3)
    cases = [((N, 5, L), o) for L in range(1, 41) for o in (0.5, 60.0) for N in (3, 1)]
    for shape, offset in cases:  # 60: shifted loops
        N, C, L = shape
        # multiples of 1/8: LayerNorm's statistics then come out exact in float and double
        # alike (contiguous rows sum in float, strided ones in double), so only the
        # normalize loops can differ
        x = (np.round(rng.standard_normal(shape) * 16) / 8 + offset).astype(dtype)
        xs = np.zeros((N, C, 2 * L), dtype)[:, :, ::2]  # the same values at stride 2
        xs[...] = x
        rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
        w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
        lw, lb = rng.standard_normal(L).astype(np.float32), rng.standard_normal(L).astype(np.float32)
        # channels-last: running statistics (the float loops of contiguous columns' statistics
        # round differently from the strided columns' double ones); offset 60 shifts them
        cm, cv = rng.standard_normal(L).astype(np.float32) + offset, rng.uniform(0.5, 2, L)
        for f in (lambda a: F.batch_norm(a, rm, rv, w, b),
                  lambda a: F.layer_norm(a, L, lw, lb),
                  lambda a: F.batch_norm(np.moveaxis(a, 2, 1), cm, cv.astype(np.float32))):
            got, want = f(x), f(xs)
            assert np.array_equal(got.view(np.uint16), np.ascontiguousarray(want).view(np.uint16)), L
    C = 700  # rows of 49: units of 334 rows, which end inside a sample's channels
    x = rng.standard_normal((2, C, 7, 7)).astype(dtype)
    xs = np.zeros((2, C, 7, 14), dtype)[..., ::2]
    xs[...] = x
    rm, rv = rng.standard_normal(C).astype(np.float32), rng.uniform(0.5, 2, C).astype(np.float32)
    got, want = F.batch_norm(x, rm, rv), F.batch_norm(xs, rm, rv)
    assert np.array_equal(got.view(np.uint16), np.ascontiguousarray(want).view(np.uint16))
