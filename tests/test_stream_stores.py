"""Outputs past half the last-level cache are written with streaming (non-temporal) stores
(float32, float64, and the 16-bit types' direct loops). Those loops must give the same bits as
the regular ones: FN_STREAM_BYTES=1 streams every eligible
output, in a subprocess, and its results are compared bit for bit with this process's (which
streams only outputs of many MB), on shapes whose runs start unaligned and end ragged."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnorm.functional as F

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_stream_stores import results
    out = results()
    np.savez({path!r}, *out)
    print("saved", len(out))
""")


def results():
    """Every streamed kind of loop (scale, affine, weight with and without centring, columns),
    float32 and float64, on rows long enough to stream (>= 256 elements), offset by one element
    so that the runs start unaligned, and with odd lengths."""
    rng = np.random.default_rng(5)
    out = []
    dtypes = [np.float32, np.float64, np.float16]
    try:
        import ml_dtypes
        dtypes.append(ml_dtypes.bfloat16)
    except ImportError:  # the bf16 extra is optional
        pass
    for dtype in dtypes:
        for L in (300, 1031):
            base = (rng.standard_normal(4 * 7 * L + 1) * 3 + 100).astype(dtype)
            x = base[1:].reshape(4, 7, L)  # one element in: unaligned runs
            w = rng.standard_normal(L).astype(dtype)
            b = rng.standard_normal(L).astype(dtype)
            c = rng.standard_normal(7).astype(dtype)
            out += [F.layer_norm(x, L, w, b), F.layer_norm(x, L, w), F.rms_norm(x, L, w),
                    F.rms_norm(x, L), F.group_norm(x, 7, c, c),
                    F.batch_norm(x, None, None, c, c, training=True),
                    F.batch_norm(x, c, np.abs(c) + 1, c, c),
                    F.add_rms_norm(x, x[::-1], L, w), F.add_layer_norm(x, x[::-1], L, w, b)]
            # channels innermost (NHWC-like): (N, W, C) memory seen as (N, C, W), C = L columns
            mem = (rng.standard_normal((3, 5, L)) + 7).astype(dtype)
            xl = np.moveaxis(mem, 2, 1)
            out += [F.batch_norm(xl, None, None, training=True), F.instance_norm(xl)]
    return out


def test_streamed_outputs_have_the_regular_bits(tmp_path):
    tests = os.path.dirname(os.path.abspath(__file__))
    path = str(tmp_path / "streamed.npz")
    env = dict(os.environ, FN_STREAM_BYTES="1")
    r = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests, path=path)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    streamed = np.load(path)
    regular = results()
    assert len(streamed.files) == len(regular) > 30
    for i, want in enumerate(regular):
        got = streamed[f"arr_{i}"]
        # (np.savez keeps bfloat16 as raw 2-byte records: compare sizes and bits)
        assert got.dtype.itemsize == want.dtype.itemsize and got.shape == want.shape
        # bit for bit (NaN-free data): the streamed loops do the same operations
        assert np.array_equal(np.ascontiguousarray(got).view(np.uint8),
                              np.ascontiguousarray(want).view(np.uint8)), i
