"""``Module``: the small part of ``torch.nn.Module`` that stateful normalization layers need.

Parameters and buffers are plain NumPy arrays registered by name, and layers assigned as attributes
are children (as torch's submodules), so ``state_dict()`` yields torch's keys in torch's order
(parameters first, then buffers, each in registration order, then each child's under its name) and
``load_state_dict()`` accepts a PyTorch checkpoint as it is (tensors are converted with NumPy).
There is no autograd graph: parameters are arrays like buffers. Gradients are opt-in per layer:
after ``m.requires_grad_()`` each forward keeps what its backward needs, ``m.backward(gy)`` returns
the input's gradient and accumulates the parameters' into the dict ``m.grad`` (keyed by parameter
name), and ``m.zero_grad()`` empties it. Without ``requires_grad_()`` a forward keeps nothing.
"""
import inspect
import itertools
import warnings
import weakref
from collections import OrderedDict, namedtuple
from types import MappingProxyType

import numpy as np

from .. import _checks
from .._checks import to_numpy  # noqa: F401 - the layers' np.asarray (torch tensors too)
from .._registered import ForwardCall, Registered

__all__ = ["Module"]


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict`` returns, as in torch."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def check_dtype(dtype):
    """The parameter dtype of a layer: float32 (None), float64, float16 or bfloat16 (ml_dtypes',
    imported only when asked for). torch dtypes are accepted by name (``torch.float64`` ->
    float64) so code written for torch runs unchanged."""
    if dtype is None:
        return np.dtype(np.float32)
    name = str(dtype)
    if name.startswith("torch."):
        dtype = name[len("torch."):]
    if isinstance(dtype, str) and dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError("dtype bfloat16 needs the ml_dtypes package "
                            "(pip install 'fastnorm-cpu[bf16]')") from None
        dtype = ml_dtypes.bfloat16
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    # `is None` first: np.dtype("float64") == None is True
    if dt is None or not (dt in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
                          or dt.name == "bfloat16"):
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64 (or None for "
                        f"float32), got {dtype!r}")
    return dt


def check_device(device):
    """fastnorm runs on the CPU only: accept None and "cpu" (also torch.device("cpu"))."""
    if device is not None and str(device) != "cpu":
        raise ValueError(f"fastnorm runs on the CPU only: expected device None or 'cpu', got {device!r}")


def _is_device(value):
    """Whether Module.to's positional argument names a device (a torch.device, or a string
    such as "cpu" or "cuda:0") rather than a dtype."""
    if type(value).__name__ == "device":
        return True
    return isinstance(value, str) and value.split(":")[0] in (
        "cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "mkldnn", "ipu", "hpu", "mtia")


def check_eps(eps, owner, allow_none=False):
    """eps as given (for torch's repr), after the functional ops' own check."""
    if eps is None and allow_none:
        return None
    _checks.check_eps(eps, owner)
    return eps.item() if isinstance(eps, np.generic) else eps


def ndim_of(input):
    """ndim of an array, tensor or nested sequence, for the layers' input checks."""
    nd = getattr(input, "ndim", None)
    return nd if isinstance(nd, int) else np.ndim(input)


def shape_of(input):
    """shape of an array, tensor (a torch.Size) or nested sequence, as a tuple of ints."""
    if type(input) is np.ndarray:
        return input.shape
    shape = getattr(input, "shape", None)
    return tuple(int(d) for d in shape) if shape is not None else np.shape(input)


def check_channels(label, input, num, dim=1):
    """ValueError in the layer's terms (``label``: e.g. "BatchNorm2d(6)") when the input's size
    at ``dim`` is not the layer's channel count; the caller has checked the input's ndim."""
    shape = shape_of(input)
    if shape[dim] != num:
        raise ValueError(f"{label}: expected input with {num} channels (dim {dim}), got input of "
                         f"shape {shape}")


def check_size(value, name):
    """A non-negative int (numpy integers accepted, bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _expose(module, name):
    """Install the Registered lookup of name on the module's class, unless the class (or a
    base) already has an attribute of that name."""
    cls = type(module)
    if not hasattr(cls, name):
        setattr(cls, name, Registered(name))


class _ForwardSignature:
    """A layer's __signature__: its forward's, for tools that inspect the layer as a callable
    (its __call__ is a descriptor, ForwardCall, that inspect cannot read through); None on the
    class, whose signature stays its constructor's."""

    def __get__(self, obj, objtype=None):
        return None if obj is None else inspect.signature(obj.forward)


# a layer's hooks and their options, keyed by handle id, as torch keeps them (OrderedDicts)
_HOOK_STORES = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _init_hooks(d):
    """A layer's forward hooks, as torch keeps them, made when the first is registered (d: its
    __dict__): a layer without them keeps a smaller __dict__, and its calls read the one key
    _hooked (absent: no hooks)."""
    for name in _HOOK_STORES:
        d.setdefault(name, OrderedDict())


class RemovableHandle:
    """What ``register_forward_hook`` / ``register_forward_pre_hook`` return, as torch's
    ``torch.utils.hooks.RemovableHandle``: ``remove()`` takes the hook out (again: nothing), and
    as a context manager it removes the hook on exit."""

    _ids = itertools.count()

    def __init__(self, module, hooks, *extra):
        self.id = next(RemovableHandle._ids)
        self._module = weakref.ref(module)
        self._refs = [weakref.ref(d) for d in (hooks, *extra)]

    def remove(self):
        for ref in self._refs:
            d = ref()
            if d is not None:
                d.pop(self.id, None)
        m = self._module()
        if m is not None:
            m._note_hooks()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Module:
    """Base class of fastnorm's layers: named parameters and buffers, train/eval mode,
    ``state_dict``/``load_state_dict`` with torch's keys, and torch's ``repr``."""

    _version = 1  # torch's per-class state_dict version, kept in state_dict()._metadata
    # torch's hook stores read on a layer without hooks: empty, read-only (_init_hooks makes a
    # layer's own at its first hook)
    _forward_hooks = _forward_pre_hooks = MappingProxyType({})

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())  # child layers, as torch's
        object.__setattr__(self, "_grad_enabled", False)
        object.__setattr__(self, "_saved", None)  # what the last forward kept for backward
        object.__setattr__(self, "grad", {})

    # -- registration -----------------------------------------------------------------------

    def _check_name(self, name, store):
        """torch's checks of a new parameter or buffer name (KeyError, TypeError)."""
        if not isinstance(name, str):
            raise TypeError(f"{store[1:-1]} name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError(f"{store[1:-1]} name can't contain \".\"")
        if name == "":
            raise KeyError(f"{store[1:-1]} name can't be empty string \"\"")
        # hasattr finds the other store's names too (their Registered lookups, None or not)
        if name not in getattr(self, store) and hasattr(self, name):
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name, value):
        """Add a parameter (an ndarray, or None for an absent one such as ``bias=False``)."""
        self._check_name(name, "_parameters")  # (so no instance attribute shadows it)
        self._check_value(name, value, "parameter")
        self._parameters[name] = value
        _expose(self, name)

    def register_buffer(self, name, value):
        """Add a buffer (an ndarray, or None where torch keeps a None buffer)."""
        self._check_name(name, "_buffers")
        self._check_value(name, value, "buffer")
        self._buffers[name] = value
        _expose(self, name)

    @staticmethod
    def _check_value(name, value, kind):
        if value is not None and not isinstance(value, np.ndarray):
            raise TypeError(f"cannot assign {type(value).__name__!r} as {kind} {name!r} "
                            f"(numpy.ndarray or None expected)")
        if kind == "parameter" and value is not None and not _checks.is_float_dtype(value.dtype):
            # as torch, whose parameters are floating point (integers cannot have gradients)
            raise TypeError(f"cannot assign an array of dtype {value.dtype} as parameter "
                            f"{name!r} (a floating-point dtype expected: "
                            f"{_checks.ACCEPTED_DTYPES})")

    def __setstate__(self, state):
        # unpickled in a process that has not built a layer of this class yet: its class
        # still needs the lookups of the parameters and buffers (_expose)
        self.__dict__.update(state)
        # pickled before layers had children: the conditional BatchNorms kept theirs apart
        self.__dict__.setdefault("_modules", self.__dict__.pop("_children", OrderedDict()))
        for store in ("_parameters", "_buffers", "_modules"):
            for name in self.__dict__.get(store, ()):
                _expose(self, name)

    def __setattr__(self, name, value):
        # torch's order: a parameter's name, then a layer (which replaces a buffer of its
        # name), a child's name, a buffer's name, a plain attribute
        params = self.__dict__.get("_parameters")
        if params is not None and name in params:
            self._check_value(name, value, "parameter")
            params[name] = value
            return
        modules = self.__dict__.get("_modules")
        if isinstance(value, Module):  # a child layer, as torch registers it
            if modules is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self.__dict__.pop(name, None)
            self._buffers.pop(name, None)
            modules[name] = value
            _expose(self, name)  # read through Registered: no __getattr__ (see _registered)
            return
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__!r} as child module "
                                f"{name!r} (a fastnorm layer or None expected)")
            modules[name] = None
            return
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            self._check_value(name, value, "buffer")
            buffers[name] = value
            return
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for store in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(store)
            if d is not None and name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # -- children -----------------------------------------------------------------------------

    def named_children(self):
        """(name, layer) of each direct child layer, in assignment order."""
        return iter([(k, m) for k, m in self._modules.items() if m is not None])

    def children(self):
        return iter([m for _, m in self.named_children()])

    def add_module(self, name, module):
        """Register a child layer (or None) under name, as torch's ``add_module``: the same
        checks, errors and messages (a name already taken by another attribute is a KeyError).
        The assignment itself goes through the layer's own rules (``setattr``)."""
        if module is not None and not isinstance(module, Module):
            t = type(module)
            full = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"
            raise TypeError(f"{full} is not a Module subclass")
        if not isinstance(name, str):
            raise TypeError(f"module name should be a string. Got {type(name).__name__}")
        if name not in self._modules and hasattr(self, name):
            raise KeyError(f"attribute '{name}' already exists")
        if "." in name:
            raise KeyError(f'module name can\'t contain ".", got: {name}')
        if name == "":
            raise KeyError('module name can\'t be empty string ""')
        if module is None and name not in self._modules:
            self._modules[name] = None
            _expose(self, name)
        else:
            setattr(self, name, module)

    def register_module(self, name, module):
        """``add_module``'s other name, as torch's."""
        self.add_module(name, module)

    def get_submodule(self, target):
        """The layer at dotted path target ("" is this layer), with torch's AttributeErrors."""
        if target == "":
            return self
        mod = self
        for item in target.split("."):
            if not hasattr(mod, item):
                raise AttributeError(f"{type(mod).__name__} has no attribute `{item}`")
            mod = getattr(mod, item)
            if not isinstance(mod, Module):
                raise AttributeError(f"`{item}` is not an nn.Module")
        return mod

    def _get_leaf(self, target):
        """(layer, name) of dotted path target's last part, with torch's error for a layer
        without that attribute (get_parameter, get_buffer)."""
        path, _, name = target.rpartition(".")
        mod = self.get_submodule(path)
        if not hasattr(mod, name):
            raise AttributeError(f"{type(mod).__name__} has no attribute `{name}`")
        return mod, name

    def get_parameter(self, target):
        """The parameter at dotted path target (e.g. "bn.weight"), with torch's errors."""
        mod, name = self._get_leaf(target)
        if mod._parameters.get(name) is None:
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return mod._parameters[name]

    def get_buffer(self, target):
        """The buffer at dotted path target (e.g. "bn.running_mean"), with torch's errors."""
        mod, name = self._get_leaf(target)
        if name not in mod._buffers:
            raise AttributeError(f"`{name}` is not a buffer")
        return mod._buffers[name]

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(name, layer) of this layer ("") and of every layer below it, depth first, as
        torch's: a layer met twice is listed once unless ``remove_duplicate=False``."""
        out = []

        def walk(m, pre, seen):
            if remove_duplicate:
                if id(m) in seen:
                    return
                seen.add(id(m))
            out.append((pre, m))
            for k, c in m._modules.items():
                if c is not None:
                    walk(c, f"{pre}.{k}" if pre else k, seen)

        walk(self, prefix, memo if memo is not None else set())
        return iter(out)

    def modules(self):
        return iter([m for _, m in self.named_modules()])

    def apply(self, fn):
        """``fn(layer)`` on every child (recursively), then on this layer. Returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _reset_affine(self):
        """weight = 1 and bias = 0 in place, for whichever of them the layer has."""
        for name, value in (("weight", 1), ("bias", 0)):
            p = self._parameters.get(name)
            if p is not None:
                p[...] = value

    def _named(self, store, prefix, recurse, remove_duplicate):
        mods = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                else [(prefix, self)])
        out, seen = [], set()
        for pre, m in mods:
            for k, v in getattr(m, store).items():
                if v is None or (remove_duplicate and id(v) in seen):
                    continue
                seen.add(id(v))
                out.append((f"{pre}.{k}" if pre else k, v))
        return iter(out)

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, array) of the parameters, this layer's first, then its children's under
        "<child>." (``recurse=False``: this layer's only), as torch's."""
        return self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return iter([v for _, v in self.named_parameters(recurse=recurse)])

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return iter([v for _, v in self.named_buffers(recurse=recurse)])

    # -- mode ---------------------------------------------------------------------------------

    def train(self, mode=True):
        """Set training mode (``mode=False``: evaluation mode). Returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = bool(mode)
        for m in self.children():
            m.train(mode)
        return self

    def eval(self):
        """Set evaluation mode. Returns self."""
        return self.train(False)

    # -- dtype and device ---------------------------------------------------------------------

    def _cast_floats(self, dt):
        """Every floating-point parameter and buffer of this layer and of its children as dt,
        their gradients too (torch's ``Module._apply``); integer buffers (num_batches_tracked)
        keep theirs. Arrays already of dt are kept as they are, and an array that several
        layers hold (tied weights) is cast once, so they go on sharing it. Returns self."""
        done = {}  # id of an array -> its cast

        def cast(v):
            if v is None or not _checks.is_float_dtype(v.dtype) or v.dtype == dt:
                return v
            if id(v) not in done:
                done[id(v)] = (v, v.astype(dt))  # (the original kept alive: ids stay unique)
            return done[id(v)][1]

        for m in self.modules():
            for store in (m._parameters, m._buffers, m.grad):
                for name, v in store.items():
                    store[name] = cast(v)
        return self

    def to(self, *args, **kwargs):
        """Cast the floating-point parameters and buffers to a dtype, as torch's ``Module.to``:
        ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(array_or_tensor)`` (its
        dtype), each optionally followed by ``non_blocking``, with keywords ``device``,
        ``dtype``, ``non_blocking`` and ``memory_format`` (torch's formats are accepted; the
        layers' arrays have none). dtype: float16, bfloat16 (ml_dtypes), float32 or float64, as
        NumPy dtypes, their names or torch's dtypes; the device must be the CPU. Integer
        buffers keep their dtype. Everything is checked before anything changes. Returns self.

        Examples
        --------
        >>> import numpy as np, fastnorm
        >>> bn = fastnorm.BatchNorm2d(4).to(np.float16)
        >>> bn.weight.dtype, bn.running_var.dtype, bn.num_batches_tracked.dtype
        (dtype('float16'), dtype('float16'), dtype('int64'))
        """
        name = f"{type(self).__name__}.to"
        if "copy" in kwargs:
            raise RuntimeError(".to() does not accept copy argument")
        bad = sorted(set(kwargs) - {"device", "dtype", "non_blocking", "memory_format"})
        if bad:
            raise TypeError(f"{name}() got an unexpected keyword argument {bad[0]!r}")
        rest = list(args)  # then non_blocking and copy, as bools
        while len(rest) > 1 and isinstance(rest[-1], (bool, np.bool_)):
            rest.pop()
        if len(args) - len(rest) > 1:
            raise RuntimeError(".to() does not accept copy argument")
        got = {}  # what the positional arguments say: device, dtype

        def put(key, value):
            if key in got or kwargs.get(key) is not None:
                raise TypeError(f"{name}() received an invalid combination of arguments: "
                                f"{key} given twice")
            got[key] = value

        if len(rest) > 2 or (len(rest) == 2 and not _is_device(rest[0])):
            raise TypeError(f"{name}() received an invalid combination of arguments: expected "
                            f"(dtype), (device[, dtype]) or (array or tensor), got "
                            f"{len(args)} positional arguments")
        for a in rest:
            if not isinstance(a, type) and hasattr(a, "dtype") and hasattr(a, "shape"):
                # an array or tensor: its dtype (and a tensor's device)
                put("dtype", a.dtype)
                put("device", getattr(a, "device", None))
            elif _is_device(a):
                put("device", a)
            else:
                put("dtype", a)
        device = got.get("device", kwargs.get("device"))
        dtype = got.get("dtype", kwargs.get("dtype"))
        fmt = kwargs.get("memory_format")
        if fmt is not None and str(fmt) not in ("torch.contiguous_format", "torch.channels_last",
                                                "torch.channels_last_3d", "torch.preserve_format"):
            raise TypeError(f"{name}(): memory_format must be a torch.memory_format, got {fmt!r}")
        check_device(device)
        if dtype is None:
            return self
        try:
            dt = check_dtype(dtype)
        except TypeError:
            raise TypeError(f"{name}() only accepts floating-point dtypes (float16, bfloat16, "
                            f"float32, float64), got {dtype!r}") from None
        return self._cast_floats(dt)

    def half(self):
        """Floating-point parameters and buffers to float16. Returns self."""
        return self._cast_floats(np.dtype(np.float16))

    def float(self):
        """Floating-point parameters and buffers to float32. Returns self."""
        return self._cast_floats(np.dtype(np.float32))

    def double(self):
        """Floating-point parameters and buffers to float64. Returns self."""
        return self._cast_floats(np.dtype(np.float64))

    def bfloat16(self):
        """Floating-point parameters and buffers to bfloat16 (needs ml_dtypes). Returns self."""
        return self._cast_floats(check_dtype("bfloat16"))

    def cpu(self):
        """Returns self: fastnorm's arrays are on the CPU."""
        return self

    # -- forward ------------------------------------------------------------------------------

    def forward(self, input):  # pragma: no cover - every layer overrides it
        raise NotImplementedError

    __call__ = ForwardCall()  # forward, looked up at each call (see _registered)
    __signature__ = _ForwardSignature()

    # -- forward hooks ------------------------------------------------------------------------

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Run ``hook(layer, args)`` before each call's forward, as torch's: a return value other
        than None replaces the positional arguments (a non-tuple becomes a 1-tuple). With
        ``with_kwargs=True``: ``hook(layer, args, kwargs)``, returning None or (args, kwargs).
        ``prepend=True`` runs it before the hooks already there. Returns a handle whose
        ``remove()`` takes it out.

        Examples
        --------
        >>> import numpy as np, fastnorm
        >>> ln = fastnorm.LayerNorm(4)
        >>> h = ln.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
        >>> seen = []
        >>> h2 = ln.register_forward_hook(lambda m, args, out: seen.append(out.shape))
        >>> _ = ln(np.ones((3, 4), np.float32)); seen
        [(3, 4)]
        >>> h.remove(); h2.remove()
        """
        return self._add_hook("_forward_pre_hooks", hook, prepend, with_kwargs=with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """Run ``hook(layer, args, output)`` after each call's forward, as torch's: a return
        value other than None replaces the output. ``with_kwargs=True``:
        ``hook(layer, args, kwargs, output)``; ``always_call=True``: also when the forward
        raises (output None; an error in the hook is then a warning); ``prepend=True``: before
        the hooks already there. Returns a handle whose ``remove()`` takes it out."""
        return self._add_hook("_forward_hooks", hook, prepend, with_kwargs=with_kwargs,
                              always_called=always_call)

    def _add_hook(self, store, hook, prepend, **options):
        """hook into store ("_forward_hooks" or "_forward_pre_hooks"; first or last), its id
        into the option stores (store + "_" + option) whose flag is set, as torch keeps them;
        the handle removes it from all of them."""
        _init_hooks(self.__dict__)
        hooks = getattr(self, store)
        extra = [getattr(self, f"{store}_{opt}") for opt in options]
        handle = RemovableHandle(self, hooks, *extra)
        hooks[handle.id] = hook
        for d, on in zip(extra, options.values()):
            if on:
                d[handle.id] = True
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        self._note_hooks()
        return handle

    def _note_hooks(self):
        """_hooked: whether a call must go through _call_hooked (ForwardCall reads this flag)."""
        object.__setattr__(self, "_hooked",
                           bool(self._forward_hooks or self._forward_pre_hooks))

    def _run_forward_hook(self, hid, hook, args, kwargs, result):
        """One forward hook's call (with the kwargs if it asked for them): its return value,
        or result where it returns None."""
        res = (hook(self, args, kwargs, result) if hid in self._forward_hooks_with_kwargs
               else hook(self, args, result))
        return result if res is None else res

    def _call_hooked(self, *args, **kwargs):
        """A call with forward hooks or pre-hooks registered (ForwardCall hands this out then):
        torch's _call_impl order and rules. The pre-hooks run inside the try (a raising one
        still lets the always_call hooks run), and the forward hooks are read after forward
        (hooks it registers or removes count), as there."""
        called, result = set(), None
        try:
            for hid, hook in list(self._forward_pre_hooks.items()):
                if hid in self._forward_pre_hooks_with_kwargs:
                    res = hook(self, args, kwargs)
                    if res is not None:
                        if not (isinstance(res, tuple) and len(res) == 2):
                            raise RuntimeError("forward pre-hook must return None or a tuple "
                                               f"of (new_args, new_kwargs), but got {res}.")
                        args, kwargs = res
                else:
                    res = hook(self, args)
                    if res is not None:
                        args = res if isinstance(res, tuple) else (res,)
            result = self.forward(*args, **kwargs)
            for hid, hook in list(self._forward_hooks.items()):
                called.add(hid)
                result = self._run_forward_hook(hid, hook, args, kwargs, result)
        except Exception:
            for hid, hook in list(self._forward_hooks.items()):
                if hid in self._forward_hooks_always_called and hid not in called:
                    try:
                        result = self._run_forward_hook(hid, hook, args, kwargs, result)
                    except Exception as e:  # noqa: BLE001 - as torch: the first error wins
                        warnings.warn("module forward hook with ``always_call=True`` raised an "
                                      "exception that was silenced as another error was raised "
                                      f"in forward: {e}", stacklevel=2)
            raise
        return result

    # -- gradients ----------------------------------------------------------------------------

    def requires_grad_(self, requires_grad=True):
        """Keep what ``backward`` needs at each forward (``requires_grad=False``: keep nothing,
        and drop what was kept). Returns self, as torch's ``Module.requires_grad_``."""
        if not isinstance(requires_grad, (bool, np.bool_)):
            raise TypeError(f"requires_grad must be a bool, got {type(requires_grad).__name__}")
        object.__setattr__(self, "_grad_enabled", bool(requires_grad))
        if not requires_grad:
            object.__setattr__(self, "_saved", None)
        for m in self.children():
            m.requires_grad_(requires_grad)
        return self

    def zero_grad(self):
        """Forget the accumulated parameter gradients (``grad`` becomes empty), the children's
        too."""
        self.grad.clear()
        for m in self.children():
            m.zero_grad()

    def _keep(self, output, **saved):
        """After a forward with gradients on: what backward needs, and the output's shape and
        dtype (the gradient must match them)."""
        if self._grad_enabled:
            saved.update(shape=output.shape, dtype=output.dtype)
            object.__setattr__(self, "_saved", saved)
        return output

    def backward(self, grad_output):
        """Gradient of the input for ``grad_output`` (d loss / d output of the last forward);
        the parameters' gradients are added to ``self.grad`` (created on first use, in each
        parameter's dtype and shape).

        Each forward (after ``requires_grad_()``) allows one backward. Without a matching
        forward, or with a ``grad_output`` of another shape or dtype than that forward's output,
        ``RuntimeError`` / ``ValueError`` / ``TypeError`` are raised and nothing changes. The
        forward's input and parameters are read again here: do not modify them in place in
        between (as an optimizer step would; step after backward).

        Examples
        --------
        >>> import numpy as np, fastnorm
        >>> m = fastnorm.LayerNorm(4).requires_grad_()
        >>> x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        >>> y = m(x)
        >>> gx = m.backward(np.ones_like(y))
        >>> gx.shape, sorted(m.grad), m.grad["bias"].tolist()
        ((3, 4), ['bias', 'weight'], [3.0, 3.0, 3.0, 3.0])
        """
        name = type(self).__name__
        saved = self._saved
        if saved is None:
            raise RuntimeError(
                f"{name}.backward: no forward to differentiate: call requires_grad_() before the "
                f"forward (each forward allows one backward)" if not self._grad_enabled else
                f"{name}.backward: no forward since the last backward (each forward allows one "
                f"backward)")
        gy = to_numpy(grad_output)
        if gy.shape != saved["shape"]:
            raise ValueError(f"{name}.backward: expected grad_output of the output's shape "
                             f"{saved['shape']}, got {gy.shape}")
        if gy.dtype != saved["dtype"]:
            raise TypeError(f"{name}.backward: expected grad_output of the output's dtype "
                            f"{saved['dtype']}, got {gy.dtype}")
        gx, grads = self._backward(saved, gy)
        params = dict(self.named_parameters())  # a container's under "<child>.<name>"
        for key, g in grads.items():  # every gradient exists before any is stored
            p = params[key]
            g = np.asarray(g, dtype=p.dtype).reshape(p.shape)
            if key in self.grad:
                self.grad[key] += g
            else:
                self.grad[key] = g.copy() if g.base is not None else g
        object.__setattr__(self, "_saved", None)
        return gx

    def _backward(self, saved, grad_output):  # pragma: no cover - every layer overrides it
        raise NotImplementedError

    def _mask(self, *names):
        """output_mask entries of the parameter gradients: those the layer has."""
        return [self._parameters.get(n) is not None for n in names]

    # -- state --------------------------------------------------------------------------------

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """Parameters then buffers by name, skipping None ones, as an ``OrderedDict`` of arrays.

        As in torch the arrays are the module's own (no copies): a later forward or
        ``load_state_dict`` shows through. ``keep_vars`` is accepted for torch compatibility.
        """
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()
        if hasattr(destination, "_metadata"):
            destination._metadata[prefix[:-1]] = {"version": self._version}
        for store in (self._parameters, self._buffers):
            for name, value in store.items():
                if value is not None:
                    destination[prefix + name] = value
        for name, child in self._modules.items():
            if child is not None:
                child.state_dict(destination, f"{prefix}{name}.", keep_vars)
        return destination

    def _fix_state_dict(self, state_dict, version, error_msgs, prefix=""):
        """Hook for fix-ups of an incoming state dict (a private copy) saved by an older version
        of the class (``version``: from torch's ``_metadata``, None when absent; ``prefix``: the
        layer's name in its parent's keys, for messages)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy parameters and buffers from ``state_dict`` (NumPy arrays, torch tensors, or
        anything ``np.asarray`` takes) into this module.

        Every key, shape and destination is checked before anything is written: on error
        nothing changes and ``RuntimeError`` lists every problem, in torch's words. Values are
        copied into the module's arrays, cast to their dtype (a read-only array there is an
        error); with ``assign=True`` the module takes the incoming arrays themselves instead
        (``np.asarray`` of each value: their dtype, floating point for parameters, and memory
        shared with a torch tensor), as torch assigns the checkpoint's tensors.
        Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        if any(m is not None for m in self._modules.values()):
            return self._load_tree(state_dict, strict, assign)
        sd = OrderedDict((k, state_dict[k]) for k in state_dict.keys())
        error_msgs, missing, new = [], [], {}
        metadata = getattr(state_dict, "_metadata", None) or {}
        self._fix_state_dict(sd, metadata.get("", {}).get("version"), error_msgs)
        local = self.state_dict()
        for key, param in local.items():
            if key not in sd:
                missing.append(key)
                continue
            try:
                value = to_numpy(sd[key])
            except Exception as exc:  # noqa: BLE001 - reported with the key, like torch
                value, why = None, f"{type(exc).__name__}: {exc}"
            else:
                why = None if _checks.is_real_dtype(value.dtype) else f"an array of dtype {value.dtype}"
            if why is not None:
                error_msgs.append(f'While copying the parameter named "{key}", expected a numeric '
                                  f"array or tensor from checkpoint but received {why}")
                continue
            if param.ndim == 0 and value.shape == (1,):  # torch's 0.3 -> 0.4 compatibility
                value = value.reshape(())
            if value.shape != param.shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{value.shape} from checkpoint, the shape in current model is "
                                  f"{param.shape}.")
                continue
            new[key] = value
        # every destination too: read-only arrays (assigned from a read-only source, say) and,
        # with assign=True, integer values for parameters
        for key, value in new.items():
            if assign and key in self._parameters and not _checks.is_float_dtype(value.dtype):
                error_msgs.append(f'While assigning the parameter named "{key}", expected a '
                                  f"floating-point array, got dtype {value.dtype}")
            elif not assign and not local[key].flags.writeable:
                error_msgs.append(f'While copying the parameter named "{key}", the module\'s '
                                  f"array is read-only")
        unexpected = [k for k in sd if k not in local]
        if strict:
            if unexpected:
                error_msgs.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected)))
            if missing:
                error_msgs.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing)))
        if error_msgs:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(error_msgs)))
        for store in (self._parameters, self._buffers):
            for name, param in store.items():
                if name in new:
                    if assign:
                        store[name] = new[name]
                    else:
                        np.copyto(param, new[name], casting="unsafe")
        return _IncompatibleKeys(missing, unexpected)

    def _load_tree(self, state_dict, strict, assign):
        """load_state_dict of a layer with children: one flat layer holds every layer's arrays
        under their full names, and its load_state_dict checks everything before it writes into
        those same arrays (or, with assign=True, the new arrays go back to their owners). Each
        layer's fix-ups of old checkpoints (_fix_state_dict: added, renamed, reshaped or refused
        keys) run on the keys under its name, every name of a shared layer included, as torch's
        _load_from_state_dict does."""
        metadata = getattr(state_dict, "_metadata", None) or {}
        tree = list(self.named_modules(remove_duplicate=False))
        flat = type(type(self).__name__, (Module,), {})()
        owners = {}  # full name -> (store, name)
        for mname, m in tree:
            pre = f"{mname}." if mname else ""
            for store, fstore in ((m._parameters, flat._parameters), (m._buffers, flat._buffers)):
                for k, v in store.items():
                    if v is not None:
                        fstore[pre + k] = v
                        owners[pre + k] = (store, k)

        def fix(sd, version, error_msgs):
            for mname, m in tree:
                pre = f"{mname}." if mname else ""
                sub = OrderedDict((k[len(pre):], v) for k, v in sd.items() if k.startswith(pre))
                m._fix_state_dict(sub, metadata.get(mname, {}).get("version"), error_msgs, pre)
                # the fixed keys where the layer's first key was (the rest keep their order)
                out, placed = [], False
                for k, v in sd.items():
                    if not k.startswith(pre):
                        out.append((k, v))
                    elif not placed:
                        out.extend((pre + q, w) for q, w in sub.items())
                        placed = True
                if not placed:
                    out.extend((pre + q, w) for q, w in sub.items())
                sd.clear()
                sd.update(out)

        object.__setattr__(flat, "_fix_state_dict", fix)
        # its keys in this layer's order (layer by layer, as torch lists missing keys)
        object.__setattr__(flat, "state_dict", lambda *a, **k: self.state_dict())
        result = flat.load_state_dict(state_dict, strict, assign)
        if assign:
            for fstore in (flat._parameters, flat._buffers):
                for key, v in fstore.items():
                    store, k = owners[key]
                    store[k] = v
        return result

    # -- repr ---------------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        """torch's: ``Name(extra)``, or with children one line each, indented."""
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items()]
        if len(lines) <= 1 and not children:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines + children) + "\n)"
