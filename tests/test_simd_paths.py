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
