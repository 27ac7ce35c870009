"""Outputs of half the last-level cache and more (three eighths for float32 rows with a weight
and bias, three quarters for the channels-last layouts, the whole cache for the channels-last
backward's dx; in the row layouts two thirds of these for outputs fastnorm
allocates) are written with streaming (non-temporal) stores (float32, float64, and the 16-bit
types' direct loops). Those loops must give the same bits as
the regular ones: FN_STREAM_BYTES=1 streams every eligible output, in a subprocess, and its
results are compared bit for bit with this process's (which streams only outputs of many MB), on
shapes whose runs start unaligned and end ragged."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnorm
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
    """Every streamed kind of loop (scale, affine, weight with and without centring, columns,
    the column layout's backward dx: GroupNorm's and training BatchNorm's), float32 and float64,
    on rows long enough to stream (>= 256 elements), offset by one element
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
        for L in (128, 300, 1031):
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
            if dtype == np.float32 and L % 16 == 0:  # the backward's streamed dx (AVX-512)
                dy = np.moveaxis(rng.standard_normal((3, 5, L)).astype(dtype), 2, 1)
                _, m, r = F.native_group_norm(xl, c[:1].repeat(L), None, 3, L, 5, L // 16,
                                              1e-5)
                out += [g for g in F.native_group_norm_backward(
                    dy, xl, m, r, c[:1].repeat(L), 3, L, 5, L // 16, [True, True, True])]
                # training BatchNorm's column backward (sums, then dx: 15 rows, an odd one)
                wl = c[:1].repeat(L) + 1
                _, m, r = F.native_batch_norm(xl, wl, None, None, None, True, 0.1, 1e-5)
                out += [g for g in F.native_batch_norm_backward(
                    dy, xl, wl, None, None, m, r, True, 1e-5, [True, True, True])]
        # channels innermost with fewer than 128 channels (float32 / float64: each unit's rows
        # streamed as one run, from its first aligned output, coefficients in any column's
        # phase): one set (BatchNorm) or one per sample (InstanceNorm, GroupNorm) on rows enough
        # for a unit to repeat its own; data near zero (two coefficients) and far from it
        for C in (3, 40, 64, 80, 127):
            for off in (0.5, 100.0):
                base = (rng.standard_normal(2 * 150 * C + 1) + off).astype(dtype)
                xl = np.moveaxis(base[1:].reshape(2, 150, C), 2, 1)  # one element in
                cc = rng.standard_normal(C).astype(dtype)
                out += [F.batch_norm(xl, cc, np.abs(cc) + 1, cc, cc),
                        F.batch_norm(xl, None, None, cc, cc, training=True),
                        F.instance_norm(xl, weight=cc, bias=cc)]
                if C % 4 == 0:
                    out.append(F.group_norm(xl, 4, cc, cc))
        if np.dtype(dtype).itemsize == 2:  # subnormal outputs (rows of 4096: streamed lines)
            xs = rng.standard_normal((8, 4096)).astype(dtype)
            scale = 2.0 ** (-20 if dtype == np.float16 else -130)  # below the smallest normal
            tiny = (rng.standard_normal(4096) * scale).astype(np.float32).astype(dtype)
            out += [F.layer_norm(xs, 4096, tiny, tiny), F.layer_norm(xs, 4096, tiny)]
            # into a 64-byte aligned out: each streamed line is one row's elements 32k .. 32k + 31,
            # its two vectors 16 apiece; subnormal outputs in only the high one, then only the low
            half = (np.arange(4096) // 16) % 2
            for sub in (1, 0):
                wt = np.where(half == sub, tiny.astype(np.float32), 1.0).astype(dtype)
                buf = np.empty(8 * 4096 + 32, dtype)
                k = (-buf.ctypes.data % 64) // 2
                o = buf[k:k + 8 * 4096].reshape(8, 4096)
                out.append(F.layer_norm(xs, 4096, wt, wt * 0, out=o))
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


def test_show_config_reports_the_streaming_threshold(capsys):
    cpu = fastnorm.get_config()["cpu"]
    assert cpu["simd"] in ("avx512", "avx2", "portable")
    assert cpu["stream_bytes"] >= 0 and cpu["l3_bytes"] >= 0
    if cpu["simd"] != "avx512":  # streaming loops are AVX-512 only
        assert cpu["stream_bytes"] == 0
    fastnorm.show_config()
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("cpu")]
    assert line and cpu["simd"] in line[0] and "streaming" in line[0]
    if cpu["stream_bytes"]:  # float32 with weight and bias first, rows, the column layouts,
        # then the channels-last backward
        assert (cpu["stream_bytes_wb"] <= cpu["stream_bytes"] <= cpu["stream_bytes_cols"]
                <= cpu["stream_bytes_backward"])
        assert f"{cpu['stream_bytes_cols'] / 2**20:g} MiB: channels-last" in line[0]
        assert (f"{cpu['stream_bytes_wb'] / 2**20:g} MiB: float32 with elementwise weight and "
                f"bias" in line[0])


def test_stream_bytes_setting_reaches_the_kernels():
    """FN_STREAM_BYTES=0 turns streaming off; a value sets the rows' threshold, the column
    layouts' is 1.5 times it, the channels-last backward's twice and float32 rows with a weight
    and bias 3/4 of it, rounded up (read at import)."""
    code = ("import fastnorm; c = fastnorm.get_config()['cpu']; "
            "print(c['stream_bytes'], c['stream_bytes_cols'], c['stream_bytes_backward'], "
            "c['stream_bytes_wb'])")
    for value in ("0", "12345", str(2**62)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(os.environ, FN_STREAM_BYTES=value), timeout=120)
        assert r.returncode == 0, r.stderr
        if fastnorm.get_config()["cpu"]["simd"] == "avx512":
            v = min(int(value), 2**60)  # clamped, so that its multiples cannot overflow
            assert r.stdout.split()[-4:] == [str(v), str(v * 3 // 2), str(2 * v),
                                             str(v - v // 4)]


def test_allocated_outputs_stream_earlier_with_the_same_bits():
    """In the row layouts a call that computes its statistics streams an output it allocates from
    two thirds of the threshold of an out= one (a loop of allocating calls keeps two outputs
    beside the input; add_* count it as one array more): between the two, allocating and out=
    calls take different stores and must still agree bit for bit. (That the allocating call
    streams there is a speed matter: benchmarks/alloc_vs_out.py.)"""
    cpu = fastnorm.get_config()["cpu"]
    if not cpu["stream_bytes"]:
        pytest.skip("no streaming stores on this CPU")
    rng = np.random.default_rng(9)
    calls = []
    for dtype in (np.float32, np.float64):
        size = np.dtype(dtype).itemsize

        def units(threshold, per):
            """How many units of per elements make an output of 0.8 threshold."""
            return max(1, int(0.8 * threshold / (per * size)))

        x = (rng.standard_normal((units(cpu["stream_bytes"], 64 * 1024), 64, 32, 32)) + 3
             ).astype(dtype)
        c = np.linspace(0.5, 2, 64, dtype=dtype)
        rows = x.reshape(-1, 1024)
        lw, lb = np.linspace(-1, 1, 1024, dtype=dtype), np.full(1024, 0.25, dtype)
        # x + r and the output: 1.5 arrays of the threshold, allocating 2
        xa = rows[: int(0.7 * len(rows))]
        calls += [lambda out=None, x=x, c=c: F.group_norm(x, 8, c, c, out=out),
                  lambda out=None, x=x, c=c: F.batch_norm(x, None, None, c, c, training=True,
                                                          out=out),
                  lambda out=None, x=x: F.instance_norm(x, out=out),
                  lambda out=None, r=rows, w=lw: F.rms_norm(r, 1024, w, out=out),
                  lambda out=None, r=xa, w=lw, b=lb: F.add_layer_norm(r, r[::-1], 1024, w, b,
                                                                      out=out)]
        # float32 rows with an elementwise weight and bias (LayerNorm) stream from stream_bytes_wb
        if dtype == np.float32:
            xw = rng.standard_normal((units(cpu["stream_bytes_wb"], 1024), 1024)).astype(dtype)
            calls.append(lambda out=None, x=xw, w=lw, b=lb: F.layer_norm(x, 1024, w, b, out=out))
    for i, f in enumerate(calls):
        got = f()
        want = f(out=np.empty_like(got))
        assert got.dtype == want.dtype and np.array_equal(got.view(np.uint8), want.view(np.uint8)), i
