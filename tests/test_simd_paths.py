"""The statistics loops have AVX-512, AVX2+FMA and portable C versions, picked once per process by
what the CPU has. FN_SIMD_LEVEL caps the pick, so each slower path is checked against the
reference here, in a subprocess, whatever this machine supports."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    sys.path.insert(0, {tests!r})
    import fastnorm.functional as F
    from fastnorm import reference as R
    from awkward import TOL, assert_matches, layouts
    from test_half import HALF, assert_ulp
    rng = np.random.default_rng(0)
    n = 0
    # row runs of every remainder mod 32, long rows, and channel-innermost (column) layouts
    for shape in [(3, 6, 37), (2, 6, 4099), (2, 3, 31, 33), (5, 66), (9, 42, 3)]:
        for dtype in [np.dtype(np.float32), np.dtype(np.float64)] + HALF:
            # the 16-bit types (within 1 ulp of float64 on their own rounded values) nearer 0
            x = (rng.standard_normal(shape) * 3 + (1e3 if dtype in TOL else 10)).astype(dtype)
            for label, a in layouts(x):
                for fast, slow in [
                        (lambda a: F.batch_norm(a, None, None, training=True),
                         lambda a: R.batch_norm(a, None, None, training=True)),
                        (lambda a: F.group_norm(a, 3), lambda a: R.group_norm(a, 3)),
                        (lambda a: F.layer_norm(a, shape[-1]), lambda a: R.layer_norm(a, shape[-1])),
                        (lambda a: F.rms_norm(a, shape[-1]), lambda a: R.rms_norm(a, shape[-1]))]:
                    if dtype in TOL:
                        assert_matches(fast(a), slow(a), dtype, f"{{shape}} {{label}}")
                    else:
                        assert_ulp(fast(a), slow(np.asarray(a, np.float64)), dtype, 1,
                                   f"{{shape}} {{label}}")
                    n += 1
    print("checked", n)
""")


@pytest.mark.parametrize("level", ["0", "1"], ids=["portable", "avx2"])
def test_capped_simd_paths_match_reference(level):
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, FN_SIMD_LEVEL=level)
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checked" in r.stdout and int(r.stdout.split()[-1]) > 100


PAIRS_SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    import fastnorm
    import fastnorm.functional as F
    h = hashlib.sha256()
    rng = np.random.default_rng(3)
    n = 0
    def add(y):
        global n
        h.update(np.ascontiguousarray(y).tobytes())
        n += 1
    for nt in (1, 2):
        fastnorm.set_num_threads(nt)
        # rows of several lengths around the loops' 32-element steps, short and long;
        # centred data (unshifted sums) and data at an offset (shifted sums)
        for L in (31, 32, 33, 47, 64, 95, 768, 4099):
            for off in (0.0, 40.0):
                x = (rng.standard_normal((3, L)) + off).astype(np.float32)
                w = rng.standard_normal(L).astype(np.float32)
                add(F.layer_norm(x, (L,), w, w))
                add(F.rms_norm(x, (L,), w))
        # channel-innermost (column tiles) and NCHW layouts, channel counts with and without a
        # remainder after the tiles' 8-column vectors
        for shape in ((2, 64, 9, 9), (1, 96, 32, 32), (3, 40, 17, 5), (2, 37, 8, 8),
                      (4, 12, 70, 3)):
            for off in (0.0, 40.0):
                x = (rng.standard_normal(shape) + off).astype(np.float32)
                xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
                for a in (x, xl):
                    add(F.group_norm(a, 1 if shape[1] % 2 else 2))
                    add(F.instance_norm(a))
                    add(F.batch_norm(a, None, None, training=True))
    print(fastnorm._kernels.cpu_info()["pairs"], n, h.hexdigest())
""")


def test_float32_pairs_give_the_512_bit_loops_bits():
    """On AMD Zen 4 float32's AVX-512 statistics loops run as pairs of 256-bit halves
    (fastnorm.h, fn_cpu_info). FN_PAIRS forces either form: their outputs must be equal bit
    for bit (rows, column tiles, centred and shifted sums, 1 and 2 threads)."""
    out = {}
    for flag in ("0", "1"):
        env = dict(os.environ, FN_PAIRS=flag)
        env.pop("FN_SIMD_LEVEL", None)
        r = subprocess.run([sys.executable, "-c", PAIRS_SCRIPT], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        out[flag] = r.stdout.split()
    assert out["0"][0] == "False"
    if out["1"][0] != "True":
        pytest.skip("no AVX-512 VL on this CPU: the pair loops cannot run")
    assert int(out["1"][1]) == 184
    assert out["0"][1:] == out["1"][1:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rows_taken_together_have_the_bits_of_rows_alone(dtype):
    """LayerNorm's short rows are summed several (two) a call; each row must get the bits it
    gets alone (a one-row call), near and far from zero, for every row length up to 300."""
    import numpy as np

    import fastnorm.functional as F

    rng = np.random.default_rng(7)
    for L in list(range(1, 40)) + [64, 95, 96, 97, 128, 192, 255, 256, 300]:
        for off in (0.0, 1e4):
            x = (rng.standard_normal((5, L)) * 2 + off).astype(dtype)
            w = rng.standard_normal(L).astype(dtype)
            together = F.layer_norm(x, L, w, w)
            for i in range(5):
                alone = F.layer_norm(x[i:i + 1], L, w, w)
                assert together[i:i + 1].tobytes() == alone.tobytes(), (L, off, i)
