# cython: language_level=3
"""The attribute through which a layer's registered parameters, buffers and children are read
(``m.weight``), and the one through which a layer is called, compiled: a layer's forward reads
several of them per call, and the same descriptor written in Python cost 0.16 us a read, a
decode-size kernel's share."""
from cpython.object cimport PyObject
from cpython.dict cimport PyDict_Check, PyDict_GetItem


cdef extern from "Python.h":
    object PyObject_GenericGetDict(object o, void* context)


cdef class Registered:
    """Class attribute through which normal attribute lookup finds a registered parameter,
    buffer or child layer (``m.weight``, ``m.bn``) in the instance's ``_parameters`` /
    ``_buffers`` / ``_modules``: Module has no
    ``__getattr__`` to find them (a class with one reads every attribute more slowly, 26 ns
    against 7 for a plain one). A non-data descriptor: an instance attribute of the same name
    (assigned while not registered) still takes precedence."""

    cdef readonly str name

    def __init__(self, str name):
        self.name = name

    def __get__(self, obj, objtype):
        if obj is None:
            return self
        cdef object d = PyObject_GenericGetDict(obj, NULL)
        cdef PyObject* store
        cdef PyObject* v
        for key in ("_parameters", "_buffers", "_modules"):  # OrderedDicts: dicts to the C API
            store = PyDict_GetItem(d, key)
            if store is not NULL and PyDict_Check(<object>store):
                v = PyDict_GetItem(<object>store, self.name)
                if v is not NULL:
                    return <object>v
        # not registered here: the usual error (a class's __getattr__, if any, is tried next)
        raise AttributeError(f"{type(obj).__name__!r} object has no attribute {self.name!r}")


def _call_forward(self, *args, **kwargs):
    """Module.__call__ read from the class (``Module.__call__(layer, x)``, as torch code does)."""
    if _has_hooks(self):
        return self._call_hooked(*args, **kwargs)
    return self.forward(*args, **kwargs)


cdef inline bint _has_hooks(object obj):
    """The layer's _hooked flag (True while it has forward hooks or pre-hooks): one lookup."""
    cdef PyObject* v = PyDict_GetItem(PyObject_GenericGetDict(obj, NULL), "_hooked")
    return v is not NULL and <object>v is True


cdef class ForwardCall:
    """A layer's ``__call__``: its ``forward``, looked up at each call, so an instance's own
    forward or a patched class's runs, as in torch; with forward hooks or pre-hooks registered,
    ``_call_hooked`` (which runs them around it, as torch's ``_call_impl``). Read from the
    class it is a plain function of (self, *args, **kwargs). In C: a forwarding
    ``__call__(self, *args, **kwargs)`` in Python cost 0.12 us a call more than calling forward,
    a fifth of a decode-size LayerNorm; a descriptor handing out the bound forward, 0.04 more."""

    def __get__(self, obj, objtype):
        if obj is None:
            return _call_forward
        if _has_hooks(obj):
            return getattr(obj, "_call_hooked")
        return getattr(obj, "forward")
