"""A fake ``cupy`` that computes with NumPy on the CPU but enforces CuPy's stricter rules.

A test harness, not part of tinygan: CI has no GPU, so the suite also runs with this
folder's parent first on PYTHONPATH and TINYGAN_BACKEND=cupy (see the README's Tests). It
checks the host/device discipline of tinygan and its tests, not CuPy's kernels.

Enforced:
- ``cupy.ndarray`` is its own class (not a numpy.ndarray); NumPy refuses it
  (``__array__`` raises TypeError, ``__array_ufunc__ = None``, ``__array_function__``
  returns NotImplemented -> TypeError).
- mixing with numpy.ndarray (any ndim, 0-d too) or lists in device operations raises
  TypeError("Unsupported type ..."), as CuPy's kernel argument check does; NumPy and
  Python scalars are accepted. Host -> device only through asarray/array/asanyarray/
  ascontiguousarray (copies) and ndarray.set.
- results of fresh computations are C-contiguous (CuPy allocates kernel outputs in C
  order); ``*_like`` / astype / copy(order=) / asfortranarray keep their layout rules.
- reductions and scalar indexing give 0-d device arrays, not NumPy scalars.
- float()/int()/bool()/item()/tolist()/repr-free conversions go through ``.get()`` (so a
  patched get or ``cupyx.allow_synchronize(False)`` catches them).
- ``cupy.random.default_rng`` -> Generator with CuPy 14's method set only (no
  bit_generator, permutation, choice, shuffle, normal); different streams from NumPy's.
- no ``__index__`` (real CuPy has none: range(dev), list[dev], np.zeros(dev) raise).

Stricter than real CuPy: NumPy functions/ufuncs given a device array raise TypeError here,
where real CuPy dispatches them (__array_function__/__array_ufunc__) to CuPy.
- ``ElementwiseKernel`` compiles the kernel's C++ body with the host's C++ compiler and
  runs it on the CPU (``_elementwise.py``).

Not enforced: CuPy's dtype rules where they differ from NumPy's, unsupported dtypes
(object, strings) beyond asarray, kernel compilation errors, memory limits, async
streams, ndarray.flat (raises NotImplementedError), device ids.
"""

import sys as _sys

import numpy as _np

from . import _sync

__version__ = "14.0.0-fake"
_FAKE = True

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")

# ----------------------------------------------------------------------------- helpers


def _is_scalar(x):
    return isinstance(x, (_np.generic, bool, int, float, complex))


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def _unwrap(x, strict=True, allow_lists=True):
    """Fake arrays -> their numpy array; numpy arrays -> TypeError when strict."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        if strict:
            raise _unsupported(x)
        return x
    if isinstance(x, (list, tuple)):
        if not allow_lists and isinstance(x, list):
            raise _unsupported(x)
        return type(x)(_unwrap(v, strict, allow_lists) for v in x)
    return x


def _arg_of_kernel(x):
    """An argument of an elementwise kernel: a device array or a scalar, nothing else."""
    if isinstance(x, ndarray):
        return x._a
    if _is_scalar(x) or x is None:
        return x
    raise _unsupported(x)


def _wrap(r, inputs=(), keep_layout=False):
    """numpy results -> fake arrays (C-contiguous when freshly computed)."""
    if isinstance(r, _np.ndarray):
        if not keep_layout and not r.flags.c_contiguous:
            fresh = not any(isinstance(i, _np.ndarray) and _np.may_share_memory(r, i)
                            for i in inputs)
            if fresh:
                r = _np.ascontiguousarray(r)
        return ndarray._from(r)
    if isinstance(r, _np.generic):
        return ndarray._from(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v, inputs, keep_layout) for v in r)
    if isinstance(r, list):
        return [_wrap(v, inputs, keep_layout) for v in r]
    return r


def _flat_arrays(obj, acc):
    if isinstance(obj, _np.ndarray):
        acc.append(obj)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _flat_arrays(v, acc)
    elif isinstance(obj, dict):
        for v in obj.values():
            _flat_arrays(v, acc)
    return acc


def _convert_index(key):
    """Indices: device arrays unwrap; NumPy integer/bool arrays and lists are accepted
    (CuPy copies them to the device)."""
    if isinstance(key, tuple):
        return tuple(_convert_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    return key


# ----------------------------------------------------------------------------- ndarray


class ndarray:
    __slots__ = ("_a", "__weakref__")
    __array_ufunc__ = None
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _from(cls, a):
        obj = object.__new__(cls)
        obj._a = a
        return obj

    # NumPy must refuse device arrays
    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_function__(self, func, types, args, kwargs):
        return NotImplemented

    # ---- device -> host
    def get(self, stream=None, order="C", out=None, blocking=True):
        _sync.check("ndarray.get")
        host = _np.array(self._a, order=order, copy=True)
        if out is not None:
            if not isinstance(out, _np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("Shape/dtype mismatch in ndarray.set")
        self._a[...] = arr

    def item(self, *args):
        return self.get().item(*args)

    def tolist(self):
        return self.get().tolist()

    def __float__(self):
        if self.size != 1:
            raise TypeError("only length-1 arrays can be converted to Python scalars")
        return float(self.get().reshape(()))

    def __int__(self):
        if self.size != 1:
            raise TypeError("only length-1 arrays can be converted to Python scalars")
        return int(self.get().reshape(()))

    def __complex__(self):
        return complex(self.get().reshape(()))

    def __bool__(self):
        if self.size == 0:
            return False
        if self.size > 1:
            raise ValueError("The truth value of an array with more than one element is "
                             "ambiguous. Use a.any() or a.all()")
        return bool(self.get().reshape(()))

    # no __index__: real CuPy has none (range(dev), list[dev], np.zeros(dev) raise)

    def __format__(self, spec):
        return format(self.get(), spec) if self.ndim else format(self.get()[()], spec)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __reduce__(self):
        return (_rebuild, (self._a.copy(),))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # ---- properties
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    T = property(lambda self: ndarray._from(self._a.T))
    mT = property(lambda self: ndarray._from(self._a.mT))
    real = property(lambda self: ndarray._from(self._a.real))
    imag = property(lambda self: ndarray._from(self._a.imag))
    device = property(lambda self: cuda.Device(0))

    @property
    def base(self):
        b = self._a.base
        return None if b is None else ndarray._from(b)

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    @property
    def flat(self):
        raise NotImplementedError("fake cupy: ndarray.flat")

    # ---- indexing
    def __getitem__(self, key):
        key = _convert_index(key)
        r = self._a[key]
        if not isinstance(r, _np.ndarray):  # CuPy gives a 0-d view, not a NumPy scalar
            r = self._a[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        return ndarray._from(r)

    def __setitem__(self, key, value):
        key = _convert_index(key)
        if isinstance(value, ndarray):
            value = value._a
        elif not _is_scalar(value):
            raise _unsupported(value)
        self._a[key] = value

    # ---- methods
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        kw = {} if casting is None else {"casting": casting}
        r = self._a.astype(dtype, order=order, copy=copy, **kw)
        return self if r is self._a else ndarray._from(r)

    def copy(self, order="C"):
        return ndarray._from(self._a.copy(order=order))

    def view(self, *args, **kwargs):
        return ndarray._from(self._a.view(*args, **kwargs))

    def fill(self, value):
        if isinstance(value, ndarray):
            value = value._a
        elif not _is_scalar(value):
            raise _unsupported(value)
        self._a.fill(value)

    def reshape(self, *shape, order="C"):
        return ndarray._from(self._a.reshape(*shape, order=order))

    def transpose(self, *axes):
        return ndarray._from(self._a.transpose(*axes))

    def ravel(self, order="C"):
        return ndarray._from(self._a.ravel(order))

    def __getattr__(self, name):
        if name in _DELEGATED_METHODS:
            def method(*args, **kwargs):
                args = tuple(_unwrap(a) for a in args)
                out = kwargs.get("out")
                kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
                r = getattr(self._a, name)(*args, **kwargs)
                if isinstance(out, ndarray):
                    return out
                return _wrap(r, (self._a,) + tuple(_flat_arrays(args, [])))
            return method
        raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")

    # ---- operators
    def _binop(self, ufunc, other, reflected=False):
        if not (isinstance(other, ndarray) or _is_scalar(other)):
            if isinstance(other, (_np.ndarray, list, tuple)):
                raise _unsupported(other)
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)
        return _ufunc_call(ufunc, (a, b), {})

    def _ibinop(self, ufunc, other):
        if not (isinstance(other, ndarray) or _is_scalar(other)):
            raise _unsupported(other)
        _ufunc_call(ufunc, (self, other), {"out": self})
        return self


def _rebuild(a):
    return ndarray._from(a)


_BIN = {
    "add": _np.add, "sub": _np.subtract, "mul": _np.multiply, "truediv": _np.true_divide,
    "floordiv": _np.floor_divide, "mod": _np.remainder, "pow": _np.power,
    "matmul": _np.matmul, "and": _np.bitwise_and, "or": _np.bitwise_or,
    "xor": _np.bitwise_xor, "lshift": _np.left_shift, "rshift": _np.right_shift,
}
for _n, _u in _BIN.items():
    setattr(ndarray, f"__{_n}__", lambda self, o, _u=_u: self._binop(_u, o))
    setattr(ndarray, f"__r{_n}__", lambda self, o, _u=_u: self._binop(_u, o, True))
    setattr(ndarray, f"__i{_n}__", lambda self, o, _u=_u: self._ibinop(_u, o))
for _n, _u in {"eq": _np.equal, "ne": _np.not_equal, "lt": _np.less, "le": _np.less_equal,
               "gt": _np.greater, "ge": _np.greater_equal}.items():
    setattr(ndarray, f"__{_n}__", lambda self, o, _u=_u: self._binop(_u, o))
ndarray.__neg__ = lambda self: _ufunc_call(_np.negative, (self,), {})
ndarray.__pos__ = lambda self: _ufunc_call(_np.positive, (self,), {})
ndarray.__abs__ = lambda self: _ufunc_call(_np.absolute, (self,), {})
ndarray.__invert__ = lambda self: _ufunc_call(_np.invert, (self,), {})
ndarray.__divmod__ = lambda self, o: (self // o, self % o)

_DELEGATED_METHODS = {
    "all", "any", "argmax", "argmin", "argpartition", "argsort", "choose", "clip",
    "compress", "conj", "conjugate", "cumprod", "cumsum", "diagonal", "dot", "flatten",
    "max", "mean", "min", "nonzero", "partition", "prod", "ptp", "put", "repeat", "round",
    "searchsorted", "sort", "squeeze", "std", "sum", "swapaxes", "take", "tobytes", "trace",
    "var",
}


# ----------------------------------------------------------------------------- functions


def _ufunc_call(uf, args, kwargs):
    np_args = tuple(_arg_of_kernel(a) for a in args)
    out = kwargs.get("out")
    kw = dict(kwargs)
    if out is not None:
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if not isinstance(o, ndarray):
                raise TypeError(f"Output arguments must be cupy.ndarray, got {type(o)}")
        kw["out"] = tuple(o._a for o in outs) if isinstance(out, tuple) else out._a
    for k in ("where",):
        if k in kw and not _is_scalar(kw[k]):
            kw[k] = _arg_of_kernel(kw[k])
    r = uf(*np_args, **kw)
    if out is not None:
        return out
    return _wrap(r, ())  # a fresh kernel output: always C-contiguous


class ufunc:
    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout, self.nargs = uf.nin, uf.nout, uf.nargs

    def __call__(self, *args, **kwargs):
        return _ufunc_call(self._uf, args, kwargs)

    def __getattr__(self, name):  # reduce, outer, at, accumulate
        meth = getattr(self._uf, name)
        if not callable(meth):
            return meth

        def call(*args, **kwargs):
            out = kwargs.get("out")
            args = tuple(_unwrap(a, allow_lists=False) for a in args)
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            r = meth(*args, **kwargs)
            return out if isinstance(out, ndarray) else _wrap(r, ())
        return call

    def __repr__(self):
        return f"<fake cupy ufunc '{self.__name__}'>"


_HOST_TO_DEVICE = {"asarray", "array", "asanyarray", "ascontiguousarray"}
# functions whose results keep NumPy's layout rules (CuPy's follow the same ones)
_KEEP_LAYOUT = {"empty_like", "zeros_like", "ones_like", "full_like", "asfortranarray",
                "copy", "array", "asarray", "asanyarray"}
# dtype/shape-only queries: NumPy arrays are fine there (they are inspected, not moved)
_QUERIES = {"result_type", "can_cast", "min_scalar_type", "ndim", "shape", "size",
            "isscalar", "iscomplexobj", "isrealobj", "common_type", "issubdtype",
            "promote_types", "dtype", "finfo", "iinfo", "obj2sctype"}


def _host_to_device(name, f):
    def convert(a, *args, **kwargs):
        if isinstance(a, ndarray):
            src = a._a
            if name == "array" or kwargs.get("copy"):
                r = f(src, *args, **kwargs)
                return ndarray._from(r if r is not src else src.copy())
            r = f(src, *args, **kwargs)
            return a if r is src else _wrap(r, (src,), keep_layout=(name != "ascontiguousarray"))
        if isinstance(a, (list, tuple)) and any(isinstance(v, ndarray) for v in a):
            a = type(a)(_unwrap(v, strict=False) for v in a)
            if any(isinstance(v, _np.ndarray) and not isinstance(v, _np.generic) for v in a):
                pass
        # host data: always a copy (device memory never aliases host memory)
        if name in ("asarray", "asanyarray", "array"):
            kwargs.pop("copy", None)
            r = _np.array(a, *args, copy=True, **kwargs)
        else:
            r = _np.array(f(a, *args, **kwargs), copy=True, order="C")
        if r.dtype == object:
            raise ValueError("Unsupported dtype object")
        return ndarray._from(r)
    convert.__name__ = name
    return convert


def _wrap_function(name, f):
    if name in _QUERIES:
        def query(*args, **kwargs):
            return f(*(_unwrap(a, strict=False) for a in args),
                     **{k: _unwrap(v, strict=False) for k, v in kwargs.items()})
        query.__name__ = name
        return query
    keep = name in _KEEP_LAYOUT

    def call(*args, **kwargs):
        out = kwargs.get("out")
        if out is not None and not isinstance(out, ndarray):
            raise TypeError(f"out must be a cupy.ndarray, got {type(out)}")
        np_args = tuple(_unwrap(a) for a in args)
        np_kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        r = f(*np_args, **np_kwargs)
        if out is not None:
            return out
        return _wrap(r, _flat_arrays((np_args, np_kwargs), []), keep_layout=keep)
    call.__name__ = name
    return call


_cache = {}


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _cache:
        return _cache[name]
    try:
        attr = getattr(_np, name)
    except AttributeError:
        raise AttributeError(f"module 'cupy' has no attribute '{name}'") from None
    if isinstance(attr, _np.ufunc):
        value = ufunc(attr)
    elif isinstance(attr, type) or not callable(attr):
        value = attr  # dtypes, scalar types, constants
    elif name in _HOST_TO_DEVICE:
        value = _host_to_device(name, attr)
    else:
        value = _wrap_function(name, attr)
    _cache[name] = value
    return value


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    r = _np.asarray(a, order=order)
    if out is not None:
        out[...] = r
        return out
    return r


def get_array_module(*args):
    return _sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def shares_memory(a, b, max_work=None):
    if isinstance(a, _np.ndarray) or isinstance(b, _np.ndarray):
        return False  # host and device memory never overlap
    return bool(_np.shares_memory(_unwrap(a), _unwrap(b)))


def may_share_memory(a, b, max_work=None):
    if isinstance(a, _np.ndarray) or isinstance(b, _np.ndarray):
        return False
    return bool(_np.may_share_memory(_unwrap(a), _unwrap(b)))


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0

    def n_free_blocks(self):
        return 0


_pool, _pinned_pool = _MemoryPool(), _MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


def show_config():
    print("fake cupy (NumPy on the CPU)")


import importlib as _importlib  # noqa: E402

from . import _core_ref  # noqa: E402
from ._elementwise import ElementwiseKernel  # noqa: E402, F401

_core_ref.ndarray = ndarray

# explicit imports: `from . import random` would find numpy.random through __getattr__
cuda = _importlib.import_module(__name__ + ".cuda")
lib = _importlib.import_module(__name__ + ".lib")
random = _importlib.import_module(__name__ + ".random")
