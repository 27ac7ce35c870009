"""An output that leads its input (or its weight or bias) by 1 to 512 bytes
modulo 4096 is written from its last element down, because forward the loads would wait on the
stores just issued (4K aliasing; see fn_lead_alias in src_c/fn_kernels.c). Each element gets the
same operations either way: such an output must have the bits of the same call writing to an
output placed elsewhere, for every loop that has a backward form (rows with weight and bias,
weight alone or none; eval BatchNorm's planes one at a time and back to back). Only float32 and
float64 calls of at most 512 KB and without activation run backward; the others are checked
too."""
import numpy as np
import pytest

import fastnorm.functional as F
from awkward import TOL, assert_matches
from test_half import HALF

from fastnorm import reference as R

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)] + HALF
LEADS = [16, 80, 496]  # bytes ahead of the input, modulo 4096
AWAY = 2048  # an output that leads by this much runs forward


def placed(shape, dtype, at):
    """An uninitialised C-ordered array whose first element lies at address `at` modulo 4096."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = np.empty(size + 8192 // dtype.itemsize, dtype)
    skip = ((at - buf.ctypes.data) % 4096) // dtype.itemsize
    flat = buf[skip:skip + size]
    assert flat.ctypes.data % 4096 == at % 4096
    return flat.reshape(shape)


def _cases(dtype):
    """(label, shape, mean of x, f(x, out)): the loops with a backward form, and
    calls that keep the forward loops (an activation; over 512 KB)."""
    rng = np.random.default_rng(7)

    def par(n):
        return rng.standard_normal(n).astype(np.float32 if dtype.itemsize == 2 else dtype)

    def stats(n):
        return par(n), (np.abs(par(n)) + 0.5).astype(par(1).dtype)

    w768, b768, w100, w300, b300 = par(768), par(768), par(100), par(300), par(300)
    w4096 = par(4096)
    rm24, rv24 = stats(24)
    w24, b24 = par(24), par(24)
    return [
        ("layer_norm weight and bias", (3, 768), 3,
         lambda x, out: F.layer_norm(x, 768, w768, b768, out=out)),
        ("layer_norm weight", (5, 100), 3, lambda x, out: F.layer_norm(x, 100, w100, out=out)),
        ("layer_norm weight, relu", (5, 100), 3,
         lambda x, out: F.layer_norm(x, 100, w100, None, out=out, activation="relu")),
        ("layer_norm plain", (2, 1000), 3, lambda x, out: F.layer_norm(x, 1000, out=out)),
        ("layer_norm far from zero", (4, 300), 1000,
         lambda x, out: F.layer_norm(x, 300, w300, b300, out=out)),
        ("layer_norm over 512 KB", (80, 4096), 3,
         lambda x, out: F.layer_norm(x, 4096, w4096, w4096, out=out)),
        ("rms_norm weight", (2, 4096), 3,
         lambda x, out: F.rms_norm(x, 4096, w4096, out=out)),
        ("add_rms_norm weight, the sum where x is", (1, 4096), 3,
         lambda x, out: F.add_rms_norm(x, x[:, ::-1], 4096, w4096, out=out,
                                       sum_out=placed(x.shape, x.dtype, x.ctypes.data))[0]),
        ("instance_norm", (2, 3, 17, 17), 3, lambda x, out: F.instance_norm(x, out=out)),
        ("eval batch_norm 7x7 planes", (2, 24, 7, 7), 3,
         lambda x, out: F.batch_norm(x, rm24, rv24, w24, b24, False, out=out)),
        ("eval batch_norm 13x13 planes", (1, 24, 13, 13), 3,
         lambda x, out: F.batch_norm(x, rm24, rv24, None, None, False, out=out)),
        ("eval batch_norm 30x30 planes", (2, 24, 30, 30), 3,
         lambda x, out: F.batch_norm(x, rm24, rv24, w24, b24, False, out=out)),
        ("group_norm", (2, 24, 9, 9), 3, lambda x, out: F.group_norm(x, 6, w24, b24, out=out)),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead", LEADS)
def test_outputs_just_ahead_of_their_input_have_the_forward_bits(dtype, lead):
    rng = np.random.default_rng(lead)
    for label, shape, mean, f in _cases(dtype):
        x = placed(shape, dtype, 640)
        x[...] = (rng.standard_normal(shape) * 2 + mean).astype(dtype)
        near = placed(shape, dtype, 640 + lead)
        away = placed(shape, dtype, 640 + AWAY)
        got, want = f(x, near), f(x, away)
        assert got is near and want is away
        assert np.array_equal(np.ascontiguousarray(got).view(np.uint8),
                              np.ascontiguousarray(want).view(np.uint8)), f"{label} {shape}"
    # one case against the reference, so that agreeing outputs cannot both be wrong
    if dtype in TOL:
        x = placed((3, 768), dtype, 640)
        x[...] = rng.standard_normal((3, 768)).astype(dtype)
        out = placed((3, 768), dtype, 640 + lead)
        assert_matches(F.layer_norm(x, 768, out=out), R.layer_norm(x, 768), dtype, "near")
