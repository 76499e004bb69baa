"""``cupy.ElementwiseKernel`` on the CPU: the kernel's C++ body compiled by the host's C++
compiler and run over every element, so that the stand-in runs tinygan's fused kernels
with the very code the GPU would (not a Python re-telling of it).

CuPy generates, per element i (in C order over the broadcast shape), a local
``const T x = x_array[i]`` for each input, a reference ``T &y = y_array[i]`` for each
output (so outputs may be read too), and raw parameters as whole arrays indexed by hand;
``i`` and ``_ind.size()`` are defined. The same is generated here, as a loop. Supported
is what tinygan uses: outputs passed by the caller, arrays and scalars, raw arrays,
typed (``float32``, ``int32``, ...) and one-letter placeholder (``T``) parameters. As NVRTC
does by default, the host compiler may fuse a multiply and an add into one instruction
(``-ffp-contract=fast`` for this CPU); with CuPy's ``--fmad=false`` option it may not
(``-ffp-contract=off``), and each operation then rounds as NumPy's does.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as _np

_CTYPES = {"float32": "float", "float64": "double", "int8": "signed char",
           "int16": "short", "int32": "int", "int64": "long long", "uint8": "unsigned char",
           "uint16": "unsigned short", "uint32": "unsigned int", "uint64": "unsigned long long",
           "bool": "bool"}
_PREAMBLE = """
#include <cmath>
#include <algorithm>
using std::sqrt; using std::exp; using std::log; using std::tanh; using std::abs;
using std::min; using std::max; using std::floor; using std::ceil; using std::pow;
struct _Indexer { long long n; long long size() const { return n; } };
"""
_compiled = {}


def _parse(params):
    """'T x, raw float32 y' -> [(raw, type, name), ...]"""
    out = []
    for part in filter(None, (p.strip() for p in params.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        if raw:
            words = words[1:]
        if len(words) != 2:
            raise ValueError(f"fake cupy ElementwiseKernel: cannot read parameter {part!r}")
        if words[1] in ("n", "i") or words[1].startswith("_"):  # as CuPy refuses them
            raise ValueError(f"fake cupy ElementwiseKernel: the name {words[1]!r} is reserved "
                             "(n, i and names starting with _)")
        if not _is_placeholder(words[0]) and words[0] not in _CTYPES:
            raise TypeError(f"fake cupy ElementwiseKernel: unknown type {words[0]!r} in {part!r}")
        out.append((raw, words[0], words[1]))
    return out


def _is_placeholder(type_name):
    return len(type_name) == 1 and type_name.isupper()


class ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name="kernel", reduce_dims=True,
                 preamble="", no_return=False, return_tuple=False, loop_prep="",
                 after_loop="", options=()):
        self.in_params, self.out_params = _parse(in_params), _parse(out_params)
        self.operation, self.name, self.preamble = operation, name, preamble
        self.loop_prep, self.after_loop, self.options = loop_prep, after_loop, tuple(options)
        self._functions = {}  # (dtypes, which arguments are arrays) -> the compiled loop

    def __call__(self, *args, size=None):
        from . import _is_scalar, ndarray

        params = self.in_params + self.out_params
        if len(args) != len(params):
            raise TypeError(f"fake cupy ElementwiseKernel {self.name}: give every input and "
                            f"output ({len(params)} arguments), got {len(args)}")
        types = {}  # placeholder -> dtype, from the arrays that use it
        for (_, type_name, name), arg in zip(params, args):
            if isinstance(arg, _np.ndarray):
                raise TypeError(f"Unsupported type {type(arg)}")
            if isinstance(arg, ndarray) and _is_placeholder(type_name):
                if types.setdefault(type_name, arg.dtype) != arg.dtype:
                    raise TypeError(f"Type is mismatched. {name} {arg.dtype} {types[type_name]}")
            elif isinstance(arg, ndarray) and arg.dtype != _np.dtype(type_name):
                raise TypeError(f"Type is mismatched. {name} {arg.dtype} {type_name}")
        for (_, type_name, _), arg in zip(params, args):
            if not isinstance(arg, ndarray) and not _is_scalar(arg):
                raise TypeError(f"Unsupported type {type(arg)}")
            if _is_placeholder(type_name) and type_name not in types:
                raise TypeError(f"fake cupy ElementwiseKernel {self.name}: no array decides "
                                f"the type {type_name}")
        dtypes = [types[t] if _is_placeholder(t) else _np.dtype(t) for _, t, _ in params]
        unsupported = [d.name for d in dtypes if d.name not in _CTYPES]
        if unsupported:
            raise TypeError(f"fake cupy ElementwiseKernel {self.name}: dtypes {unsupported} "
                            "are not supported by the stand-in")
        n_in = len(self.in_params)
        outputs = args[n_in:]
        if any(not isinstance(o, ndarray) for o in outputs):
            raise TypeError(f"fake cupy ElementwiseKernel {self.name}: pass the outputs "
                            "(the stand-in does not allocate them)")
        elementwise = [a._a for (raw, _, _), a in zip(params, args)
                       if isinstance(a, ndarray) and not raw]
        shape = _np.broadcast_shapes(*(a.shape for a in elementwise)) if elementwise else ()
        for (raw, _, name), out in zip(self.out_params, outputs):
            if not raw and out.shape != shape:
                raise ValueError(f"fake cupy ElementwiseKernel {self.name}: output {name} has "
                                 f"shape {out.shape}, the broadcast shape is {shape}")
        n = int(_np.prod(shape)) if size is None else int(size)
        buffers, write_back = [], []
        for k, ((raw, _, _), arg, dtype) in enumerate(zip(params, args, dtypes)):
            if isinstance(arg, ndarray):
                a = arg._a if raw else _np.broadcast_to(arg._a, shape)
                contiguous = _np.ascontiguousarray(a, dtype=dtype)
                if k >= n_in and contiguous is not arg._a:
                    write_back.append((arg._a, contiguous))
            else:
                contiguous = _np.asarray(arg, dtype=dtype).reshape(1)
            buffers.append(contiguous)
        signature = (tuple(dtypes), tuple(isinstance(a, ndarray) for a in args))
        function = self._functions.get(signature)
        if function is None:  # built once per signature: a call costs little more than C's loop
            function = self._functions[signature] = self._compiled(*signature)
        pointers = (ctypes.c_void_p * len(buffers))(*(b.ctypes.data for b in buffers))
        function(ctypes.c_longlong(n), pointers)
        for target, result in write_back:
            target[...] = result
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _compiled(self, dtypes, is_array):
        params = self.in_params + self.out_params
        lines = [_PREAMBLE]
        placeholders = {t: d for (_, t, _), d in zip(params, dtypes) if _is_placeholder(t)}
        for placeholder, dtype in placeholders.items():
            lines.append(f"typedef {_CTYPES[dtype.name]} {placeholder};")
        lines += [self.preamble,
                  'extern "C" void run(long long _n, void **_args) {',
                  "  _Indexer _ind = {_n};"]
        loop = []
        for k, ((raw, _, name), dtype, array) in enumerate(zip(params, dtypes, is_array)):
            c = _CTYPES[dtype.name]
            const = "const " if k < len(self.in_params) else ""
            if not array:
                lines.append(f"  const {c} {name} = *({c} *)_args[{k}];")
            elif raw:
                lines.append(f"  {const}{c} *{name} = ({c} *)_args[{k}];")
            else:
                lines.append(f"  {c} *_p_{name} = ({c} *)_args[{k}];")
                ref = f"{const}{c} {name} = _p_{name}[i];" if const else \
                    f"{c} &{name} = _p_{name}[i];"
                loop.append("    " + ref)
        lines += ["  " + self.loop_prep,
                  "  for (long long i = 0; i < _n; ++i) {", *loop,
                  "    " + self.operation.replace("\n", "\n    ") + ";",  # as CuPy adds
                  "  }", "  " + self.after_loop, "}"]
        source = "\n".join(lines)
        # NVRTC contracts a * b + c into one fused multiply-add unless told --fmad=false; so
        # does the host compiler here, on a CPU that has the instruction
        contract = "off" if "--fmad=false" in self.options else "fast"
        flags = ["-O2", "-march=native", f"-ffp-contract={contract}", "-fPIC", "-shared"]
        compiler = _compiler()
        key = hashlib.sha256("\n".join([compiler, *flags, source]).encode()).hexdigest()[:24]
        if key not in _compiled:
            _compiled[key] = _load(_build(compiler, flags, source, key))
        return _compiled[key]


def _compiler():
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None or shutil.which(compiler) is None:
        raise RuntimeError("fake cupy ElementwiseKernel needs a C++ compiler: c++ or g++ on the "
                           f"PATH, or $CXX (now {os.environ.get('CXX')!r})")
    return compiler


def _cache_folder():
    """This user's own folder for the compiled kernels (0700; refused if anyone else's)."""
    folder = os.path.join(tempfile.gettempdir(), f"tinygan_stand_in_kernels_{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if os.path.islink(folder) or os.stat(folder).st_uid != os.getuid():
        raise RuntimeError(f"fake cupy ElementwiseKernel: {folder} is not this user's own "
                           "folder; remove it")
    os.chmod(folder, 0o700)  # nobody else may put a library there
    return folder


def _build(compiler, flags, source, key):
    """The shared library for ``source``, compiled once per machine (cached by its hash)."""
    folder = _cache_folder()
    library = os.path.join(folder, f"{key}.so")
    if os.path.exists(library):
        return library
    # a file of its own, then renamed: test processes running at once never see half of one
    with tempfile.TemporaryDirectory(dir=folder) as work:
        src = os.path.join(work, "kernel.cpp")
        with open(src, "w") as f:
            f.write(source)
        built = os.path.join(work, "kernel.so")
        proc = subprocess.run([compiler, *flags, src, "-o", built], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"fake cupy ElementwiseKernel: the kernel does not compile:\n"
                               f"{proc.stderr[-3000:]}\n--- source ---\n{source}")
        os.replace(built, library)
    return library


def _load(library):
    function = ctypes.CDLL(library).run
    function.argtypes = [ctypes.c_longlong, ctypes.POINTER(ctypes.c_void_p)]
    function.restype = None
    return function

