"""Layer state as torch keeps it: registering names, assigning parameters and children, loads
that fail before writing anything, and the mixed parameter dtypes of the Sandwich BatchNorm and
of BatchNorm folding (a fuzzing review found each of these off)."""
import numpy as np
import pytest

import fastnorm
from fastnorm.utils import fuse_conv_bn_weights

f32 = np.float32


def test_assigned_child_replaces_the_old_one():
    m = fastnorm.SandwichBatchNorm2d(3, num_classes=2, rng=0)
    new = fastnorm.BatchNorm2d(3)
    new.weight[...] = 2
    m.bn = new
    assert m.bn is new and m.state_dict()["bn.weight"].tolist() == [2, 2, 2]
    m.eval()
    assert not new.training
    m.load_state_dict({**m.state_dict(), "bn.bias": np.full(3, 5, f32)})
    assert new.bias.tolist() == [5, 5, 5]
    with pytest.raises(TypeError, match="cannot assign 'int' as child module 'embed'"):
        m.embed = 3
    with pytest.raises(AttributeError, match="cannot delete child module 'bn'"):
        del m.bn
    assert isinstance(m.embed, fastnorm.Module) and m.bn is new


def test_failed_load_into_a_read_only_array_writes_nothing():
    m = fastnorm.LayerNorm(3)
    m.bias = np.broadcast_to(np.zeros(1, f32), (3,))  # read-only
    with pytest.raises(RuntimeError, match='"bias", the module\'s array is read-only'):
        m.load_state_dict({"weight": np.full(3, 2, f32), "bias": np.ones(3, f32)})
    assert m.weight.tolist() == [1, 1, 1]
    with pytest.raises(RuntimeError, match=r'(?s)Missing key.*"weight".*read-only'):
        m.load_state_dict({"bias": np.ones(3, f32)})  # every problem in one error
    m.load_state_dict({"weight": np.full(3, 2, f32), "bias": np.ones(3, f32)}, assign=True)
    assert m.weight.tolist() == [2, 2, 2] and m.bias.tolist() == [1, 1, 1]


def test_parameters_are_floating_point():
    m = fastnorm.BatchNorm2d(3)
    with pytest.raises(TypeError, match="dtype int64 as parameter 'weight'"):
        m.weight = np.ones(3, np.int64)
    sd = {k: (v.astype(np.int64) if k in ("weight", "bias") else v)
          for k, v in m.state_dict().items()}
    with pytest.raises(RuntimeError, match='"weight", expected a floating-point array'):
        m.load_state_dict(sd, assign=True)
    assert m.weight.dtype == f32
    m.load_state_dict(sd)  # copied into the float32 arrays: fine, as torch
    assert m.num_batches_tracked.dtype == np.int64  # buffers may be integers


def test_no_count_to_keep_is_an_unexpected_key_as_torch():
    m = fastnorm.BatchNorm2d(3)
    m.num_batches_tracked = None
    sd = {k: v for k, v in fastnorm.BatchNorm2d(3).state_dict().items()
          if k != "num_batches_tracked"}  # an old checkpoint: no count, no version metadata
    assert m.load_state_dict(sd, strict=False).unexpected_keys == ["num_batches_tracked"]
    with pytest.raises(RuntimeError, match='Unexpected key.*"num_batches_tracked"'):
        m.load_state_dict(sd)


@pytest.mark.parametrize("name,words", [("a.b", r'name can.*t contain "\."'),
                                        ("", "be empty string"),
                                        ("eps", "attribute 'eps' already exists"),
                                        ("running_mean", "attribute 'running_mean' already")])
def test_register_checks_names_as_torch(name, words):
    m = fastnorm.BatchNorm2d(3)
    with pytest.raises(KeyError, match=words):
        m.register_parameter(name, np.ones(3, f32))
    if name != "running_mean":
        with pytest.raises(KeyError, match=words):
            m.register_buffer(name, np.ones(3, f32))
    assert list(m.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                    "num_batches_tracked"]
    m.register_parameter("bias", None)  # the same store: replaced, as torch
    assert m.bias is None


def test_container_missing_keys_child_by_child():
    m = fastnorm.SandwichBatchNorm2d(3, num_classes=2)
    missing = m.load_state_dict({"bn.running_mean": np.zeros(3, f32),
                                 "bn.num_batches_tracked": np.array(0)}, strict=False)[0]
    assert missing == ["bn.weight", "bn.bias", "bn.running_var", "embed.weight"]


@pytest.mark.parametrize("pdtype,xdtype", [(np.float16, f32), ("bfloat16", f32),
                                           (f32, np.float64)])
def test_sandwich_coefficients_in_the_compute_type(pdtype, xdtype):
    """Parameters of another dtype are cast to the compute type before they are combined."""
    if pdtype == "bfloat16":
        pdtype = pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(0)
    m = fastnorm.SandwichBatchNorm2d(4, num_classes=3, rng=0).eval()
    for p in (m.bn.weight, m.bn.bias, m.embed.weight):
        p[...] = rng.standard_normal(p.shape) * 3
    m.load_state_dict({k: v.astype(pdtype) if v.dtype.kind == "f" else v
                       for k, v in m.state_dict().items()}, assign=True)
    x = rng.standard_normal((3, 4, 5, 5)).astype(xdtype)
    labels = np.array([0, 2, 1])
    p = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    xh = (x - p["bn.running_mean"][:, None, None]) / np.sqrt(p["bn.running_var"] + 1e-5)[
        :, None, None]
    inner = xh * p["bn.weight"][:, None, None] + p["bn.bias"][:, None, None]
    e = p["embed.weight"][labels]
    want = e[:, :4, None, None] * inner + e[:, 4:, None, None]
    tol = 1e-12 if xdtype == np.float64 else 2e-5
    assert np.abs(m(x, labels) - want).max() <= tol * max(1.0, np.abs(want).max())


def test_folding_takes_bfloat16():
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 2, 3, 3)).astype(bf16)
    rm, rv = rng.standard_normal(4).astype(f32), rng.random(4).astype(f32) + 0.5
    fw, fb = fuse_conv_bn_weights(w, None, rm, rv, 1e-5, None, None)
    assert fw.dtype == bf16 and fb.dtype == bf16
    s = 1 / np.sqrt(rv.astype(np.float64) + 1e-5)
    want = (w.astype(np.float64) * s[:, None, None, None]).astype(bf16)
    np.testing.assert_array_equal(fw.astype(f32), want.astype(f32))
    np.testing.assert_array_equal(fb.astype(f32), (-rm * s).astype(bf16).astype(f32))


def _blocks():
    """The same layer tree in fastnorm and torch: a container of a LayerNorm, a container of a
    BatchNorm2d, and a GroupNorm, assigned as attributes in a subclass's __init__."""
    torch = pytest.importorskip("torch")

    def build(base, nn):
        class Inner(base):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm2d(4)

        class Block(base):
            def __init__(self):
                super().__init__()
                self.scale = 2.0  # a plain attribute stays one
                self.norm1 = nn.LayerNorm(4)
                self.inner = Inner()
                self.gn = nn.GroupNorm(2, 4)

            def forward(self, x):
                return self.gn(self.inner.bn(self.norm1(x)))

        return Block()

    return build(fastnorm.Module, fastnorm), build(torch.nn.Module, torch.nn), torch


def test_layers_assigned_in_a_subclass_are_children_as_in_torch():
    ours, theirs, torch = _blocks()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.named_parameters(recurse=False)] == []
    assert repr(ours) == repr(theirs)
    assert ours.scale == 2.0 and "scale" not in dict(ours.named_children())
    visited = []
    ours.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["LayerNorm", "BatchNorm2d", "Inner", "GroupNorm", "Block"]
    # mode reaches every layer below
    assert ours.eval() is ours and not ours.inner.bn.training and not ours.norm1.training
    ours.train()
    assert ours.inner.bn.training
    # a torch checkpoint of the tree loads whole, then the forward agrees in training mode
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    assert str(ours.load_state_dict(theirs.state_dict())) == "<All keys matched successfully>"
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 4)).astype(f32)
    want = theirs(torch.from_numpy(x)).detach().numpy()
    got = ours.gn(ours.inner.bn(ours.norm1(x)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.inner.bn.running_var, theirs.inner.bn.running_var.numpy(),
                               rtol=1e-6)


def test_children_load_and_assign_as_in_torch():
    ours, theirs, torch = _blocks()
    sd = {k: v.numpy() for k, v in theirs.state_dict().items()}
    del sd["inner.bn.running_mean"]
    sd["extra.weight"] = np.ones(4, f32)
    with pytest.raises(RuntimeError) as e:
        ours.load_state_dict(sd)
    with pytest.raises(RuntimeError) as t:
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    assert 'Missing key(s) in state_dict: "inner.bn.running_mean"' in str(e.value)
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in str(e.value)
    assert str(e.value).split(":", 1)[1] == str(t.value).split(":", 1)[1]
    assert ours.load_state_dict(sd, strict=False) == tuple(
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False))
    np.testing.assert_array_equal(ours.inner.bn.running_var, sd["inner.bn.running_var"])
    # assign=True hands the arrays themselves to the layers that own them
    sd2 = ours.state_dict()
    new = {k: v.copy() for k, v in sd2.items()}
    ours.load_state_dict(new, assign=True)
    assert ours.inner.bn.running_var is new["inner.bn.running_var"]
    # None in a child's place, as torch: it leaves the state; anything else is refused
    ours.norm1 = None
    theirs.norm1 = None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "(norm1): None" in repr(ours)
    with pytest.raises(TypeError, match="cannot assign 'int' as child module 'gn'"):
        ours.gn = 3
    del ours.gn
    assert "gn.weight" not in ours.state_dict() and not hasattr(ours, "gn")
    # copied (pickle's protocol: the classes here are local), the tree is whole
    import copy
    back = copy.deepcopy(ours)
    assert list(back.state_dict()) == list(ours.state_dict())
    assert back.inner.bn.running_var.tolist() == ours.inner.bn.running_var.tolist()


def test_requires_grad_and_zero_grad_reach_the_children():
    ours, _, _ = _blocks()
    ours.requires_grad_()
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 4)).astype(f32)
    y = ours.norm1(x)
    ours.norm1.backward(np.ones_like(y))
    assert sorted(ours.norm1.grad) == ["bias", "weight"]
    ours.zero_grad()
    assert ours.norm1.grad == {}
    ours.requires_grad_(False)
    with pytest.raises(RuntimeError, match="call requires_grad_"):
        ours.inner.bn.backward(np.ones((2, 4, 3, 4), f32))


def _dtypes(module):
    """name -> dtype name of every parameter and buffer (torch's names: torch.float16 ->
    float16)"""
    return {k: str(v.dtype).replace("torch.", "") for k, v in module.state_dict().items()}


def test_to_and_the_dtype_casts_as_in_torch():
    ours, theirs, torch = _blocks()
    steps = [(lambda m: m.half(), lambda m: m.half()),
             (lambda m: m.to(torch.float64), lambda m: m.to(torch.float64)),
             (lambda m: m.to("cpu", torch.float32), lambda m: m.to("cpu", torch.float32)),
             (lambda m: m.double(), lambda m: m.double()),
             (lambda m: m.to(dtype=torch.float16, non_blocking=True),
              lambda m: m.to(dtype=torch.float16, non_blocking=True)),
             (lambda m: m.to(np.zeros(2, np.float32)), lambda m: m.to(torch.zeros(2))),
             (lambda m: m.to(device="cpu"), lambda m: m.to(device="cpu")),
             (lambda m: m.cpu().float(), lambda m: m.cpu().float())]
    for ours_step, theirs_step in steps:
        assert ours_step(ours) is ours
        theirs_step(theirs)
        assert _dtypes(ours) == _dtypes(theirs)
    assert ours.inner.bn.num_batches_tracked.dtype == np.int64
    # an array of the wanted dtype stays the same array
    w = ours.norm1.weight
    assert ours.to(np.float32).norm1.weight is w
    # the layers run in their new dtype: float16 input, float16 parameters
    x = np.random.default_rng(2).standard_normal((2, 4, 3, 4)).astype(np.float16)
    ours.half().eval()
    assert ours.gn(ours.inner.bn(ours.norm1(x))).dtype == np.float16
    # gradients follow their parameters
    ours.float().requires_grad_()
    y = ours.norm1(x.astype(f32))
    ours.norm1.backward(np.ones_like(y))
    ours.double()
    assert {k: g.dtype for k, g in ours.norm1.grad.items()} == {"weight": np.float64,
                                                               "bias": np.float64}
    # integer dtypes and other devices are refused, before anything changes
    for bad in (torch.int64, np.int32, "int8"):
        with pytest.raises(TypeError, match="only accepts floating-point dtypes"):
            ours.to(bad)
        with pytest.raises(TypeError):
            theirs.to(bad if bad is torch.int64 else torch.int32)
    with pytest.raises(ValueError, match="CPU only"):
        ours.to("cuda:0", torch.float16)
    with pytest.raises(TypeError, match="unexpected keyword argument 'dtypes'"):
        ours.to(dtypes=torch.float16)
    assert _dtypes(ours)["norm1.weight"] == "float64"
    # argument combinations torch refuses, refused with its exception types
    for args, kwargs in [((torch.float16, True, False), {}), ((torch.float16,), {"copy": True}),
                         ((torch.float16, torch.float64), {}),
                         ((torch.float16,), {"dtype": torch.float64}),
                         (("cpu",), {"device": "cpu"}), ((), {"memory_format": "bad"})]:
        with pytest.raises((TypeError, RuntimeError)) as e:
            ours.to(*args, **kwargs)
        with pytest.raises((TypeError, RuntimeError)) as t:
            theirs.to(*args, **kwargs)
        assert type(e.value) is type(t.value), (args, kwargs)
    assert _dtypes(ours)["norm1.weight"] == "float64"
    ours.to("cpu", torch.float16, True, memory_format=torch.channels_last)
    assert _dtypes(ours)["norm1.weight"] == "float16"


def test_cast_keeps_tied_weights_tied():
    torch = pytest.importorskip("torch")
    ours, theirs = fastnorm.Module(), torch.nn.Module()
    ours.a, ours.b = fastnorm.LayerNorm(4), fastnorm.LayerNorm(4)
    theirs.a, theirs.b = torch.nn.LayerNorm(4), torch.nn.LayerNorm(4)
    ours.b.weight = ours.a.weight
    theirs.b.weight = theirs.a.weight
    ours.half()
    theirs.half()
    assert ours.a.weight is ours.b.weight and ours.a.weight.dtype == np.float16
    assert len(list(ours.parameters())) == len(list(theirs.parameters())) == 3


def test_bfloat16_cast():
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    ln = fastnorm.LayerNorm(8).bfloat16()
    assert ln.weight.dtype == bf16
    assert ln.to("float32").weight.dtype == np.float32
    assert ln.to("bfloat16").bias.dtype == bf16
    x = np.random.default_rng(3).standard_normal((2, 8)).astype(bf16)
    assert ln(x).dtype == bf16


def test_submodule_parameter_and_buffer_lookups_as_in_torch():
    ours, theirs, torch = _blocks()
    for target in ("", "inner", "inner.bn", "gn"):
        got, want = ours.get_submodule(target), theirs.get_submodule(target)
        assert type(got).__name__ == type(want).__name__
    assert ours.get_parameter("inner.bn.weight") is ours.inner.bn.weight
    assert ours.get_buffer("inner.bn.running_var") is ours.inner.bn.running_var
    assert ours.get_buffer("inner.bn.num_batches_tracked").dtype == np.int64
    calls = [("get_submodule", "inner.nope"), ("get_submodule", "scale"),
             ("get_submodule", "norm1.weight"), ("get_parameter", "inner.bn.running_mean"),
             ("get_parameter", "gn.nope"), ("get_buffer", "inner.bn.weight"),
             ("get_buffer", "nope.x"), ("get_parameter", "inner.nope.weight")]
    for method, target in calls:
        with pytest.raises(AttributeError) as e:
            getattr(ours, method)(target)
        with pytest.raises(AttributeError) as t:
            getattr(theirs, method)(target)
        assert str(e.value) == str(t.value), (method, target)
    # add_module / register_module: torch's checks and messages
    for name, value in (("x.y", fastnorm.LayerNorm(2)), ("", fastnorm.LayerNorm(2)),
                        ("scale", fastnorm.LayerNorm(2)), (3, fastnorm.LayerNorm(2))):
        with pytest.raises((KeyError, TypeError)) as e:
            ours.add_module(name, value)
        with pytest.raises((KeyError, TypeError)) as t:
            theirs.add_module(name, torch.nn.LayerNorm(2))
        assert (type(e.value), str(e.value)) == (type(t.value), str(t.value)), name
    with pytest.raises(TypeError, match="is not a Module subclass"):
        ours.add_module("extra", np.ones(3))
    with pytest.raises(TypeError) as e:
        ours.add_module("extra", 3)
    with pytest.raises(TypeError) as t:
        theirs.add_module("extra", 3)
    assert str(e.value) == str(t.value)
    # the layer's own rules apply: the conditional BatchNorms refuse None for their children
    cbn = fastnorm.CategoricalConditionalBatchNorm2d(4, 3)
    with pytest.raises(TypeError, match="cannot assign 'NoneType' as child module 'bn'"):
        cbn.add_module("bn", None)
    ours.register_module("extra", fastnorm.LayerNorm(4))
    theirs.register_module("extra", torch.nn.LayerNorm(4))
    ours.add_module("empty", None)
    theirs.add_module("empty", None)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs)
    assert ours.get_submodule("extra") is ours.extra and ours.empty is None


def test_forward_hooks_as_in_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(f32)
    logs = {}
    ours_ln = fastnorm.LayerNorm(4)
    for lib, m, conv in (("ours", ours_ln, lambda a: a),
                         ("torch", torch.nn.LayerNorm(4), torch.from_numpy)):
        log = logs[lib] = []
        hs = [m.register_forward_pre_hook(lambda mod, args: log.append("pre1")),
              m.register_forward_pre_hook(lambda mod, args: log.append("pre0") or (args[0] * 2,),
                                          prepend=True),
              m.register_forward_pre_hook(lambda mod, args, kw: log.append(("kw", kw)) or None,
                                          with_kwargs=True),
              m.register_forward_hook(lambda mod, args, out: log.append(tuple(out.shape))),
              m.register_forward_hook(lambda mod, args, out: out + 1),
              m.register_forward_hook(lambda mod, args, kw, out: log.append("last"),
                                      with_kwargs=True)]
        y = m(conv(x))
        log.append(np.asarray(y.detach() if lib == "torch" else y).round(5).tolist())
        # Module.__call__ read from the class runs them too
        log.append(np.asarray(type(m).__call__(m, conv(x)).detach() if lib == "torch"
                              else type(m).__call__(m, conv(x))).round(5).tolist())
        hs[1].remove()
        hs[1].remove()  # again: nothing
        with hs[4]:
            pass  # leaving the block removes the hook
        log.append(np.asarray(m(conv(x)).detach() if lib == "torch" else m(conv(x)))
                   .round(5).tolist())
        for h in hs:
            h.remove()
        log.append(np.asarray(m(conv(x)).detach() if lib == "torch" else m(conv(x)))
                   .round(5).tolist())
    assert logs["ours"] == logs["torch"]
    assert logs["ours"][0] == "pre0"
    assert ours_ln.__call__ == ours_ln.forward  # no hooks left: calls go straight to forward again
    # a pre-hook returning one value (not a tuple) replaces the only argument
    ln = fastnorm.LayerNorm(4)
    ln.register_forward_pre_hook(lambda mod, args: args[0][:1])
    assert ln(x).shape == (1, 4)
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        bad = fastnorm.LayerNorm(4)
        bad.register_forward_pre_hook(lambda mod, args, kw: 3, with_kwargs=True)
        bad(x)
    # always_call: run when the forward raises, its own error a warning, the first error wins
    for lib, m, arg in (("ours", fastnorm.LayerNorm(4), np.ones((2, 5), f32)),
                        ("torch", torch.nn.LayerNorm(4), torch.ones(2, 5))):
        seen = []
        m.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
        m.register_forward_hook(lambda mod, args, out: 1 / 0, always_call=True)
        m.register_forward_hook(lambda mod, args, out: seen.append("not always"))
        with pytest.warns(UserWarning, match="silenced"), pytest.raises(
                (ValueError, RuntimeError)):
            m(arg)
        assert seen == [None], lib
    # a raising pre-hook still lets the always_call hooks run; hooks registered by the forward
    # itself run in that call
    for lib, m, arg in (("ours", fastnorm.LayerNorm(4), x),
                        ("torch", torch.nn.LayerNorm(4), torch.from_numpy(x))):
        seen = []
        assert not m._forward_hooks
        m.register_forward_pre_hook(lambda mod, args: 1 / 0)
        m.register_forward_hook(lambda mod, args, out: seen.append(out), always_call=True)
        with pytest.raises(ZeroDivisionError):
            m(arg)
        assert seen == [None], lib
        m2 = type(m)(4)
        forward = m2.forward

        def patched(inp, m2=m2, forward=forward, seen=seen):
            m2.register_forward_hook(lambda mod, args, out: seen.append("late"))
            return forward(inp)

        m2.forward = patched
        m2.register_forward_pre_hook(lambda mod, args: None)
        m2(arg)
        assert seen == [None, "late"], lib
    # a child's hooks run when its parent's forward calls it
    ours, _, _ = _blocks()
    shapes = []
    ours.inner.bn.register_forward_hook(lambda mod, args, out: shapes.append(out.shape))
    ours(np.random.default_rng(5).standard_normal((2, 4, 3, 4)).astype(f32))
    assert shapes == [(2, 4, 3, 4)]


def test_layers_pickled_before_children_existed_load_whole():
    """Pickles of the version before Module had children: layers without ``_modules``, and the
    conditional BatchNorms with their children in ``_children``."""
    ln = fastnorm.LayerNorm(4)
    state = dict(ln.__dict__)
    del state["_modules"]
    old = fastnorm.LayerNorm.__new__(fastnorm.LayerNorm)
    old.__setstate__(state)
    assert list(old.named_children()) == [] and list(old.state_dict()) == ["weight", "bias"]
    m = fastnorm.SandwichBatchNorm2d(3, num_classes=2, rng=0)
    state = dict(m.__dict__)
    state["_children"] = state.pop("_modules")
    old = fastnorm.SandwichBatchNorm2d.__new__(fastnorm.SandwichBatchNorm2d)
    old.__setstate__(state)
    assert list(old.state_dict()) == list(m.state_dict()) and old.bn is m.bn
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4)).astype(f32)
    y = np.array([0, 1])
    np.testing.assert_array_equal(old.eval()(x, y), m.eval()(x, y))


def test_each_childs_fix_ups_of_old_checkpoints_apply_in_a_tree():
    """A layer's own handling of old checkpoints (refused, reshaped, added keys) is the same
    inside a container, every name of a shared layer included; as torch's
    _load_from_state_dict, with the child's name in the message."""
    torch = pytest.importorskip("torch")
    from collections import OrderedDict

    class Box(fastnorm.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

    b = Box(fastnorm.InstanceNorm2d(3))
    sd = OrderedDict([("c.running_mean", np.zeros(3, f32)), ("c.running_var", np.ones(3, f32))])
    tb = torch.nn.Module()
    tb.c = torch.nn.InstanceNorm2d(3)
    for strict in (True, False):
        with pytest.raises(RuntimeError) as e:
            b.load_state_dict(sd, strict=strict)
        with pytest.raises(RuntimeError) as t:
            tb.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=strict)
        assert str(e.value).split(":", 1)[1] == str(t.value).split(":", 1)[1]
    # FRN's (1, C, 1, 1) parameters from other ports are reshaped on load, in a tree too
    b = Box(fastnorm.FilterResponseNorm2d(3))
    sd = OrderedDict((f"c.{k}", np.full((1, 3, 1, 1), 2, f32)) for k in b.c.state_dict())
    assert str(b.load_state_dict(sd)) == "<All keys matched successfully>"
    assert b.c.weight.tolist() == [2, 2, 2]
    # one BatchNorm under two names, a checkpoint from before num_batches_tracked
    s, ts = fastnorm.Module(), torch.nn.Module()
    s.a = s.b = fastnorm.BatchNorm1d(2)
    ts.a = ts.b = torch.nn.BatchNorm1d(2)
    sd = OrderedDict((k, v) for k, v in s.state_dict().items() if "num_batches" not in k)
    sd._metadata = {"a": {"version": 1}, "b": {"version": 1}}
    assert str(s.load_state_dict(sd)) == "<All keys matched successfully>"
    assert ([n for n, _ in s.named_parameters(remove_duplicate=False)]
            == [n for n, _ in ts.named_parameters(remove_duplicate=False)]
            == ["a.weight", "a.bias", "b.weight", "b.bias"])
    # a layer assigned over a buffer's name replaces it, as in torch
    m, tm = fastnorm.Module(), torch.nn.Module()
    m.register_buffer("x", np.zeros(2, f32))
    tm.register_buffer("x", torch.zeros(2))
    m.x, tm.x = fastnorm.LayerNorm(2), torch.nn.LayerNorm(2)
    assert list(m.state_dict()) == list(tm.state_dict()) == ["x.weight", "x.bias"]


def test_repr_of_a_multi_line_extra_repr_as_torch():
    torch = pytest.importorskip("torch")

    class D(fastnorm.Module):
        def extra_repr(self):
            return "a=1\nb=2"

    class TD(torch.nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"

    assert repr(D()) == repr(TD()).replace("TD(", "D(") == "D(\n  a=1\n  b=2\n)"


def test_unpickled_old_conditional_bn_reaches_its_children_in_a_fresh_class():
    """The attribute lookups of children unpickled from the old layout are installed even when
    no layer of the class was built in the process (here: the class's lookup removed)."""
    m = fastnorm.CategoricalConditionalBatchNorm2d(3, num_classes=2, rng=0)
    state = dict(m.__dict__)
    state["_children"] = state.pop("_modules")
    cls = type(m)
    saved = {n: cls.__dict__[n] for n in ("bn", "embed") if n in cls.__dict__}
    for n in saved:
        delattr(cls, n)
    try:
        old = cls.__new__(cls)
        old.__setstate__(state)
        assert old.bn is m._modules["bn"] and old.embed is m._modules["embed"]
    finally:
        for n, d in saved.items():
            if n not in cls.__dict__:
                setattr(cls, n, d)
