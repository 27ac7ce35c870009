"""The native_* forward/backward pairs against torch.autograd over the awkward-input generator
(offsets, layouts, size-1 and empty axes), output_mask, eval-mode statistics, argument errors,
the large-offset accuracy of float32 gradients, and thread-count independence."""
import numpy as np
import pytest

import fastnorm
import fastnorm.functional as F
from awkward import data_variants, layouts

DTYPES = [np.float32, np.float64]
# gradients against torch.autograd in float64 on the same input values: float32 within rtol 1e-4
# (of the largest gradient) / atol 1e-5, float64 within 1e-10
TOL = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-10, 1e-10)}


def _close(got, want, dtype, what, tol_dtype=None):
    rtol, atol = TOL[np.dtype(tol_dtype or dtype)]
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    if want.size:
        err = np.max(np.abs(got.astype(np.float64) - want))
        bound = atol + rtol * max(1.0, np.max(np.abs(want)))
        assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def _inputs(shape, dtype):
    """(label, x) over data variants without NaN/inf (their gradients are NaN) and layouts."""
    for dlabel, data in data_variants(shape, dtype):
        if dlabel in ("nan", "inf"):
            continue
        for llabel, arr in layouts(data):
            yield f"{dlabel}-{llabel}", arr


def _torch_grads(torch, fn, x, dy, params, shift=0.0):
    """Gradients of sum(fn(x, *params) * dy) in float64 torch: x's, then each param's (None for
    a None param). torch gets C order (its batch_norm backward is wrong on some Fortran-order
    inputs, e.g. (1, 3, 1, 5)) and x - shift, exact for these values: ops whose gradients do not
    change when x moves by a constant are fed centred data, where torch's float64 backward (which
    sums dy * x) keeps the 1e-10 accuracy that it loses at an offset of 1e4."""
    tx = torch.tensor(np.ascontiguousarray(x, np.float64) - shift, requires_grad=True)
    tp = [None if p is None else torch.tensor(np.asarray(p, np.float64), requires_grad=True)
          for p in params]
    y = fn(tx, *tp)
    y.backward(torch.tensor(np.asarray(dy, np.float64)))
    return [tx.grad.numpy()] + [None if p is None else p.grad.numpy() for p in tp]


# (op, shape, case): case builds torch's function and ours
OPS = [
    ("bn_train", (4, 3, 5, 6)), ("bn_train", (6, 5)), ("bn_train", (1, 3, 1, 5)),
    ("bn_eval", (4, 3, 5, 6)), ("in", (3, 4, 5, 6)), ("in", (2, 3, 1, 7)),
    ("in_eval", (3, 4, 5)), ("gn", (2, 6, 4, 5)), ("gn", (3, 4, 1)), ("ln", (3, 4, 10)),
    ("ln2", (3, 4, 10)), ("rms", (3, 4, 10)), ("rms_noweight", (5, 1, 7)),
]


def _case(torch, op, x):
    """(torch function, params, ours(dy, x) -> grads in torch's order)."""
    rng = np.random.default_rng(7)
    C = x.shape[1] if x.ndim > 1 else 1
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = rng.standard_normal(C), rng.random(C) + 0.5
    tF = torch.nn.functional
    all3 = [True, True, True]
    if op == "bn_train":
        def ours(dy, x):
            y, m, r = F.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5)
            return F.native_batch_norm_backward(dy, x, w, None, None, m, r, True, 1e-5, all3)
        return (lambda t, tw, tb: tF.batch_norm(t, None, None, tw, tb, True, 0.1, 1e-5)), [w, b], ours
    if op in ("bn_eval", "in_eval"):
        def ours(dy, x):
            fwd = F.native_batch_norm if op == "bn_eval" else F.native_instance_norm
            bwd = (F.native_batch_norm_backward if op == "bn_eval"
                   else F.native_instance_norm_backward)
            y, m, r = fwd(x, w, b, rm, rv, False, 0.1, 1e-5)
            assert m.shape == (0,) and r.shape == (0,)
            return bwd(dy, x, w, rm, rv, None, None, False, 1e-5, all3)
        trm, trv = torch.tensor(rm), torch.tensor(rv)
        return (lambda t, tw, tb: tF.batch_norm(t, trm, trv, tw, tb, False, 0.1, 1e-5)), [w, b], ours
    if op == "in":
        def ours(dy, x):
            y, m, r = F.native_instance_norm(x, w, b, None, None, True, 0.1, 1e-5)
            assert m.shape == x.shape[:2] and m.dtype == np.float64
            return F.native_instance_norm_backward(dy, x, w, None, None, m, r, True, 1e-5, all3)
        return (lambda t, tw, tb: tF.instance_norm(t, None, None, tw, tb, True, 0.1, 1e-5)), [w, b], ours
    if op == "gn":
        G = 2
        N, HxW = x.shape[0], int(np.prod(x.shape[2:]))

        def ours(dy, x):
            y, m, r = F.native_group_norm(x, w, b, N, C, HxW, G, 1e-5)
            assert m.shape == (N, G)
            return F.native_group_norm_backward(dy, x, m, r, w, N, C, HxW, G, all3)
        return (lambda t, tw, tb: tF.group_norm(t, G, tw, tb, 1e-5)), [w, b], ours
    if op in ("ln", "ln2"):
        ns = x.shape[-1:] if op == "ln" else x.shape[-2:]
        w, b = rng.standard_normal(ns), rng.standard_normal(ns)

        def ours(dy, x):
            y, m, r = F.native_layer_norm(x, ns, w, b, 1e-5)
            assert m.shape == x.shape[:x.ndim - len(ns)] + (1,) * len(ns)
            return F.native_layer_norm_backward(dy, x, ns, m, r, w, b, all3)
        return (lambda t, tw, tb: tF.layer_norm(t, ns, tw, tb, 1e-5)), [w, b], ours
    ns = x.shape[-1:]
    w = None if op == "rms_noweight" else rng.standard_normal(ns)

    def ours(dy, x):
        y, r = F.native_rms_norm(x, ns, w, 1e-5)
        assert r.shape == x.shape[:-1] + (1,)
        return F.native_rms_norm_backward(dy, x, ns, r, w, [True, True])
    return (lambda t, tw: tF.rms_norm(t, ns, tw, 1e-5)), [w], ours


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,shape", OPS)
def test_native_backward_matches_torch_autograd(torch, op, shape, dtype):
    dy = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    for label, x in _inputs(shape, dtype):
        fn, params, ours = _case(torch, op, x)
        invariant = op in ("bn_train", "in", "gn", "ln", "ln2")
        shift = float(np.round(np.median(x))) if invariant and x.size else 0.0
        want = _torch_grads(torch, fn, x, dy, params, shift)
        got = ours(dy, x)
        for k, (g, t) in enumerate(zip(got, want)):
            if t is None:
                assert g is None, f"{label}: gradient {k} should be None"
                continue
            wdt = dtype if k == 0 else np.float64  # parameters given in float64 here
            _close(g, t.reshape(g.shape), wdt, f"{op} {label} gradient {k}", dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_native_forward_statistics_match_torch(torch, dtype):
    """save_mean / save_invstd, mean / rstd: torch's values and shapes, float64."""
    A = torch.ops.aten
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 3, 5)).astype(dtype)
    tx = torch.from_numpy(x.astype(np.float64))
    pairs = [
        (F.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5),
         A.native_batch_norm(tx, None, None, None, None, True, 0.1, 1e-5)),
        (F.native_layer_norm(x, (3, 5), None, None, 1e-5),
         A.native_layer_norm(tx, [3, 5], None, None, 1e-5)),
        (F.native_group_norm(x, None, None, 4, 6, 15, 3, 1e-5),
         A.native_group_norm(tx, None, None, 4, 6, 15, 3, 1e-5)),
        (F.native_rms_norm(x, [5], None, 1e-5), A._fused_rms_norm(tx, [5], None, 1e-5)),
    ]
    for ours, theirs in pairs:
        for k, (o, t) in enumerate(zip(ours, theirs)):
            t = t.numpy()
            assert o.shape == t.shape
            if k:
                assert o.dtype == np.float64
            np.testing.assert_allclose(o, t, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-5 if dtype == np.float32 else 1e-12)


def test_rms_norm_eps_none_is_the_dtype_epsilon(torch):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    _, r = F.native_rms_norm(x, [8], None, None)
    _, tr = torch.ops.aten._fused_rms_norm(torch.from_numpy(x), [8], None, None)
    np.testing.assert_allclose(r, tr.numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_empty_input(shape):
    x = np.zeros(shape, np.float32)
    y, m, r = F.native_instance_norm(x, None, None, None, None, True, 0.1, 1e-5)
    gx, gw, gb = F.native_instance_norm_backward(x, x, None, None, None, m, r, True, 1e-5,
                                                 [True, True, True])
    assert gx.shape == shape and gx.dtype == np.float32
    assert gw.shape == (3,) and not gw.any() and not gb.any()


def test_output_mask_skips_what_is_not_asked():
    rng = np.random.default_rng(0)
    x, dy, w = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5)), np.ones(3)
    y, m, r = F.native_batch_norm(x, w, w, None, None, True, 0.1, 1e-5)
    full = F.native_batch_norm_backward(dy, x, w, None, None, m, r, True, 1e-5, [1, 1, 1])
    for mask in ([True, False, False], [False, True, False], [False, False, True]):
        got = F.native_batch_norm_backward(dy, x, w, None, None, m, r, True, 1e-5, mask)
        for asked, g, f in zip(mask, got, full):
            if asked:
                np.testing.assert_array_equal(g, f)
            else:
                assert g is None
    y, m, r = F.native_layer_norm(x, 5, w[:1].repeat(5), None, 1e-5)
    gx, gw, gb = F.native_layer_norm_backward(dy, x, 5, m, r, np.ones(5), None, [1, 1, 1])
    assert gx is not None and gw is not None and gb is None  # no bias, no grad_bias
    assert F.native_rms_norm_backward(dy, x, 5, r, None, [False, True]) == (None, None)


def test_eval_batch_norm_backward_uses_running_statistics():
    """dx = dy * weight / sqrt(running_var + eps): statistics held constant, as torch."""
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    w, rm, rv = rng.standard_normal(3), rng.standard_normal(3), rng.random(3) + 0.5
    gx, gw, gb = F.native_batch_norm_backward(dy, x, w, rm, rv, None, None, False, 1e-5,
                                              [1, 1, 1])
    r = 1 / np.sqrt(rv + 1e-5)
    np.testing.assert_allclose(gx, dy * (w * r)[None, :, None], rtol=1e-14)
    np.testing.assert_allclose(gw, np.sum(dy * (x - rm[:, None]) * r[:, None], axis=(0, 2)),
                               rtol=1e-13)


@pytest.mark.parametrize("call,exc,words", [
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy[:, :2], x, None, None, None, m, r,
                                                      True, 1e-5, [1, 1, 1]),
     ValueError, "grad_out of the input's shape"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy.astype(np.float32), x, None, None, None,
                                                      m, r, True, 1e-5, [1, 1, 1]),
     TypeError, "grad_out of the input's dtype"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy, x, None, None, None, None, r, True,
                                                      1e-5, [1, 1, 1]),
     ValueError, "save_mean is required"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy, x, None, None, None, m, r, False,
                                                      1e-5, [1, 1, 1]),
     ValueError, "running_mean is required"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy, x, None, None, None, m[:2], r, True,
                                                      1e-5, [1, 1, 1]),
     ValueError, "save_mean of shape"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy, x, None, None, None, m, r, True,
                                                      1e-5, [1, 1]),
     ValueError, "output_mask must have 3 entries"),
    (lambda x, dy, m, r: F.native_group_norm_backward(dy, x, m, r, None, 4, 3, 6, 3,
                                                      [1, 1, 1]),
     ValueError, "HxW"),
    (lambda x, dy, m, r: F.native_layer_norm_backward(dy, x, 4, m, r, None, None, [1, 1, 1]),
     ValueError, "normalized_shape"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy, x, None, None, None, m, r, True,
                                                      1e-5, "abc"),
     TypeError, "output_mask must be a sequence of 3 bools, got 'abc'"),
    (lambda x, dy, m, r: F.native_batch_norm_backward(dy, x, None, None, None, m, r, True,
                                                      1e-5, [1, 0, "x"]),
     TypeError, "output_mask must be a sequence of 3 bools"),
    # the forward ops' check of normalized_shape (int() had truncated 5.7 and parsed "5")
    (lambda x, dy, m, r: F.native_layer_norm(x, [5.7], None, None, 1e-5),
     TypeError, r"native_layer_norm: normalized_shape must be an int or a sequence of ints"),
    (lambda x, dy, m, r: F.native_rms_norm(x, "5", None, None),
     TypeError, r"native_rms_norm: normalized_shape must be an int or a sequence of ints"),
    (lambda x, dy, m, r: F.native_layer_norm_backward(dy, x, [5.5], m, r, None, None, [1, 1, 1]),
     TypeError, r"normalized_shape must be an int or a sequence of ints"),
])
def test_errors_say_what_was_expected(call, exc, words):
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    _, m, r = F.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    with pytest.raises(exc, match=words):
        call(x, dy, m, r)


def _layer_grad(dtype, x, dy):
    y, m, r = F.native_layer_norm(x.astype(dtype), 64, None, None, 1e-5)
    return F.native_layer_norm_backward(dy.astype(dtype), x.astype(dtype), 64, m, r, None, None,
                                        [True, False, False])[0]


def test_large_offset_float32_gradient_keeps_float64_accuracy(torch):
    """float32 input at |mean| / std = 1e4: grad_input within 1e-4 (relative to its largest
    value) of the float64 result; torch's float32 backward is far off on the same input."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 8, 64)) + 1e4).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ours, errs = {}, {}
    for name in ("bn", "ln", "gn"):
        for dt in (np.float32, np.float64):
            xs, ds = x.astype(dt), dy.astype(dt)
            if name == "bn":
                _, m, r = F.native_batch_norm(xs, None, None, None, None, True, 0.1, 1e-5)
                g = F.native_batch_norm_backward(ds, xs, None, None, None, m, r, True, 1e-5,
                                                 [1, 0, 0])[0]
            elif name == "ln":
                g = _layer_grad(dt, xs, ds)
            else:
                _, m, r = F.native_group_norm(xs, None, None, 16, 8, 64, 4, 1e-5)
                g = F.native_group_norm_backward(ds, xs, m, r, None, 16, 8, 64, 4,
                                                 [1, 0, 0])[0]
            ours[name, dt] = g
        want = ours[name, np.float64]
        errs[name] = np.max(np.abs(ours[name, np.float32] - want)) / np.max(np.abs(want))
    tx = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.layer_norm(tx, (64,), None, None, 1e-5).backward(torch.from_numpy(dy))
    want = ours["ln", np.float64]
    torch_err = np.max(np.abs(tx.grad.numpy() - want)) / np.max(np.abs(want))
    assert max(errs.values()) <= 1e-4, f"fastnorm float32 errors {errs}, torch's {torch_err:.3g}"


# thread-count independence: shapes that take the threaded paths (more than 2 * 32768
# elements) with long rows (chunked), short rows, columns with several row blocks, LayerNorm
THREAD_CASES = [
    ("bn", (4, 8, 128, 128), "C"), ("bn", (2, 4, 8192 * 3), "C"), ("bn", (8, 16, 64, 64), "NHWC"),
    ("in", (4, 8, 64, 64), "C"), ("gn", (4, 16, 32, 32), "NHWC"), ("ln", (512, 384), "C"),
    # grad_cols: slabs fused per thread; two passes over row blocks (2-D), over column tiles
    ("in", (8, 64, 32, 32), "NHWC"), ("bn", (256, 1024), "C"), ("in", (2, 1100, 8, 8), "NHWC"),
]


@pytest.mark.parametrize("op,shape,layout", THREAD_CASES)
def test_bitwise_identical_for_any_thread_count(op, shape, layout):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) + 3).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    if layout == "NHWC":
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(0, 3, 1, 2)
    C, w = shape[1], np.linspace(0.5, 1.5, shape[-1 if op == "ln" else 1]).astype(np.float32)

    def run():
        if op == "bn":
            _, m, r = F.native_batch_norm(x, w, None, None, None, True, 0.1, 1e-5)
            return F.native_batch_norm_backward(dy, x, w, None, None, m, r, True, 1e-5, [1, 1, 1])
        if op == "in":
            _, m, r = F.native_instance_norm(x, w, None, None, None, True, 0.1, 1e-5)
            return F.native_instance_norm_backward(dy, x, w, None, None, m, r, True, 1e-5,
                                                   [1, 1, 1])
        if op == "gn":
            N, HxW = shape[0], int(np.prod(shape[2:]))
            _, m, r = F.native_group_norm(x, w, None, N, C, HxW, 4, 1e-5)
            return F.native_group_norm_backward(dy, x, m, r, w, N, C, HxW, 4, [1, 1, 1])
        _, m, r = F.native_layer_norm(x, shape[-1], w, w, 1e-5)
        return F.native_layer_norm_backward(dy, x, shape[-1], m, r, w, w, [1, 1, 1])
    fastnorm.set_num_threads(1)
    one = run()
    fastnorm.set_num_threads(2)
    two = run()
    for a, b in zip(one, two):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("op,shape", [("bn", (256, 1024)), ("bn", (300, 70)),
                                      ("in", (8, 64, 32, 32)), ("in", (2, 1100, 3, 5))])
def test_column_layout_train_backward_matches_torch(torch, op, shape):
    """grad_cols (one entry per group: BatchNorm over contiguous channels, channels-last
    InstanceNorm), in its fused and two-pass forms, against float64 torch.autograd."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 3 + 1
    dy = rng.standard_normal(shape)
    if len(shape) == 4:  # channels last
        x, dy = (np.ascontiguousarray(np.moveaxis(a, 1, -1)).transpose(0, 3, 1, 2) for a in (x, dy))
    w = rng.standard_normal(shape[1])
    fn = torch.nn.functional.batch_norm if op == "bn" else torch.nn.functional.instance_norm
    want = _torch_grads(torch, lambda tx, tw: fn(tx, None, None, tw, None, True, 0.1, 1e-5),
                        x, dy, [w])
    for dt in DTYPES:
        xs, ds, ws = x.astype(dt), dy.astype(dt), w.astype(dt)
        if op == "bn":
            _, m, r = F.native_batch_norm(xs, ws, None, None, None, True, 0.1, 1e-5)
            got = F.native_batch_norm_backward(ds, xs, ws, None, None, m, r, True, 1e-5, [1, 1, 1])
        else:
            _, m, r = F.native_instance_norm(xs, ws, None, None, None, True, 0.1, 1e-5)
            got = F.native_instance_norm_backward(ds, xs, ws, None, None, m, r, True, 1e-5,
                                                  [1, 1, 1])
        _close(got[0], want[0], dt, "grad_input")
        _close(got[1], want[1], dt, "grad_weight")
        _close(got[2], dy.sum(axis=tuple(i for i in range(dy.ndim) if i != 1)), dt, "grad_bias")


def test_backward_never_modifies_its_arguments():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
    w, rm, rv = rng.standard_normal(3), rng.standard_normal(3), rng.random(3) + 0.5
    _, m, r = F.native_batch_norm(x, w, w, None, None, True, 0.1, 1e-5)
    _, mi, ri = F.native_instance_norm(x, w, w, None, None, True, 0.1, 1e-5)
    _, ml, rl = F.native_layer_norm(x, 5, None, None, 1e-5)
    calls = [
        lambda a: F.native_batch_norm_backward(*a[:2], a[2], a[3], a[4], a[5], a[6], False, 1e-5,
                                               [1, 1, 1]),
        lambda a: F.native_batch_norm_backward(*a[:2], a[2], None, None, a[5], a[6], True, 1e-5,
                                               [1, 1, 1]),
        lambda a: F.native_instance_norm_backward(*a[:2], a[2], None, None, a[7], a[8], True,
                                                  1e-5, [1, 1, 1]),
        lambda a: F.native_layer_norm_backward(*a[:2], 5, a[9], a[10], None, None, [1, 0, 0]),
    ]
    args = [dy, x, w, rm, rv, m, r, mi, ri, ml, rl]
    before = [a.copy() for a in args]
    for call in calls:
        call(args)
        for a, b in zip(args, before):
            np.testing.assert_array_equal(a, b)
