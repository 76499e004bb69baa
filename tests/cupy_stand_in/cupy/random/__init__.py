"""cupy.random stand-in: streams differ from NumPy's; CuPy 14's Generator API only."""
import numpy as _np

_SALT = 0x5EED_C0DA  # mixes every seed, so streams never equal NumPy's for the same seed


def _wrap(r):
    from cupy._core_ref import ndarray
    if isinstance(r, _np.generic):
        r = _np.asarray(r)
    if isinstance(r, _np.ndarray):
        return ndarray._from(_np.ascontiguousarray(r))
    return r


def _entropy(seed):
    if seed is None:
        return None
    if isinstance(seed, _np.random.SeedSequence):
        return [_SALT] + list(_np.atleast_1d(seed.entropy))
    return [_SALT] + [int(s) for s in _np.atleast_1d(_np.asarray(seed, dtype=object))]


def _check_float_dtype(dtype):
    dtype = _np.dtype(dtype)
    if dtype.char not in "fd":
        raise TypeError(f"Unsupported dtype {dtype.name} for random")
    return dtype


class BitGenerator:
    def __init__(self, seed=None):
        ent = _entropy(seed)
        self._np_gen = _np.random.Generator(_np.random.PCG64(_np.random.SeedSequence(ent)))


class XORWOW(BitGenerator):
    pass


class MRG32k3a(BitGenerator):
    pass


class Philox4x3210(BitGenerator):
    pass


class Generator:
    """CuPy 14's methods: no bit_generator state, permutation, choice, shuffle, normal."""
    __slots__ = ("_g", "_bg")

    def __init__(self, bit_generator):
        self._bg = bit_generator
        self._g = bit_generator._np_gen

    def _out(self, r, out):
        if out is not None:
            out[...] = _wrap(r)
            return out
        return _wrap(r)

    def random(self, size=None, dtype=_np.float64, out=None):
        dtype = _check_float_dtype(dtype)
        return self._out(self._g.random(size, dtype=dtype), out)

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        dtype = _check_float_dtype(dtype)
        return self._out(self._g.standard_normal(size, dtype=dtype), out)

    def standard_exponential(self, size=None, dtype=_np.float64, method="inv", out=None):
        dtype = _check_float_dtype(dtype)
        return self._out(self._g.standard_exponential(size, dtype=dtype), out)

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        return _wrap(self._g.integers(low, high, size, dtype=dtype, endpoint=endpoint))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        return _wrap(self._g.uniform(low, high, size).astype(dtype))

    def _dist(name):
        def method(self, *args, size=None, **kwargs):
            return _wrap(getattr(self._g, name)(*args, size=size, **kwargs))
        method.__name__ = name
        return method

    for _n in ("beta", "binomial", "chisquare", "dirichlet", "exponential", "f", "gamma",
               "geometric", "hypergeometric", "logseries", "poisson", "power",
               "standard_gamma"):
        locals()[_n] = _dist(_n)
    del _n, _dist


def default_rng(seed=None):
    if isinstance(seed, Generator):
        return seed
    if isinstance(seed, BitGenerator):
        return Generator(seed)
    return Generator(XORWOW(seed))


class RandomState:
    """The legacy API (cupy.random.RandomState / module functions)."""

    def __init__(self, seed=None, method=None):
        self.seed(seed)

    def seed(self, seed=None):
        ent = _entropy(seed)
        self._rs = _np.random.RandomState(_np.random.SeedSequence(ent).generate_state(1)[0])

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        f = getattr(self._rs, name)

        def call(*args, dtype=None, **kwargs):
            from cupy._core_ref import ndarray
            if name in ("shuffle",):
                (a,) = args
                a._a[...] = self._rs.permutation(a._a)
                return None
            args = tuple(a._a if isinstance(a, ndarray) else a for a in args)
            r = f(*args, **kwargs)
            if dtype is not None:
                r = _np.asarray(r).astype(dtype)
            return _wrap(r)
        return call


_global = RandomState()


def get_random_state():
    return _global


def set_random_state(rs):
    global _global
    _global = rs


def seed(seed=None):
    _global.seed(seed)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in ("rand", "randn", "randint", "random", "random_sample", "ranf", "sample",
                "normal", "uniform", "standard_normal", "permutation", "shuffle", "choice",
                "exponential", "gamma", "beta", "binomial", "poisson", "lognormal"):
        return getattr(_global, name)
    raise AttributeError(f"module 'cupy.random' has no attribute '{name}'")
