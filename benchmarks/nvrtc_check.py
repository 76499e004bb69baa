"""Compile tinygan's fused kernels for a GPU without one: CuPy's own code generator, NVRTC.

    pip install nvidia-cuda-nvrtc-cu12      # NVRTC itself (CuPy's wheel does not bring it)
    python benchmarks/nvrtc_check.py [--arch compute_90]

For each kernel of ``tinygan/kernels.py``, in float32 and float64, this builds the CUDA
source that CuPy's ``ElementwiseKernel`` would build for contiguous arrays, compiles it with
NVRTC and the kernel's own options, and reads the PTX: every floating-point add, multiply,
divide and square root must round to nearest on its own (``.rn``), with no fused
multiply-add, or the kernel would not match the readable NumPy code bit for bit. It uses
CuPy's private helpers (``cupy._core._kernel``, as of CuPy 14), so it is a developer's check,
not a test; a GPU run of the test suite (``tests/test_kernels.py``) is the real one.
"""

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOAT_OP = re.compile(r"^\s*((?:add|sub|mul|div|sqrt|rcp|fma|mad)\.[\w.]*f(?:32|64))", re.M)


class Array:
    """Stands for an array argument (col2im reads its output's shape)."""

    shape = (1, 1, 1, 1)


class Recorder:
    """Stands in for cupy.ElementwiseKernel: keeps the definition and, once called, which
    arguments are arrays; launches nothing."""

    specs = {}

    def __init__(self, in_params, out_params, operation, name, options=()):
        self.name = name
        self.specs[name] = [in_params, out_params, operation, tuple(options), None]

    def __call__(self, *args):
        self.specs[self.name][4] = tuple(isinstance(arg, Array) for arg in args)


def kernel_specs():
    """{name: [in_params, out_params, operation, options, which arguments are arrays]} of
    every kernel in tinygan.kernels, collected by calling each with placeholder arguments."""
    sys.path.insert(0, str(ROOT))
    from tinygan import kernels

    kernels.xp = type("Namespace", (), {"ElementwiseKernel": Recorder})
    a = Array()
    kernels.adam(a, a, a, a, 0.9, 0.999, 1e-8, 1.0, 1.0)
    kernels.col2im(a, a, (4, 4), (2, 2), (1, 1), (1, 1))
    kernels.batchnorm_affine(a, a, a, a, a)
    kernels.batchnorm_input_grad(a, a, a, a, a, 2, a)
    kernels.running_average(a, a, a, a, 2.0, 0.1)
    return Recorder.specs


def cuda_source(spec, dtype):
    """CuPy's source for the kernel on 1-D contiguous arrays of ``dtype``, and scalars for
    the other arguments."""
    import numpy as np
    from cupy import ndarray
    from cupy._core import _carray, _kernel, _scalar

    in_params, out_params, operation, _, is_array = spec
    params = (_kernel._get_param_info(in_params, True) + _kernel._get_param_info(out_params, False)
              + _kernel._get_param_info("CIndexer _ind", False))
    infos = []
    for param, array in zip(params[:-1], is_array, strict=True):
        param_dtype = np.dtype(dtype) if param.dtype is None else param.dtype
        infos.append(_kernel._ArgInfo(1, ndarray, param_dtype, 1, True, False) if array else
                     _kernel._ArgInfo(3, _scalar.CScalar, param_dtype, 0, True, False))
    infos.append(_kernel._ArgInfo(2, _carray.Indexer, None, 1, True, False))
    type_map = _kernel._TypeMap((("T", np.dtype(dtype)),))
    body = _kernel._get_elementwise_kernel_code(tuple(infos), type_map, tuple(params),
                                                operation, "kernel", "")
    return "#include <cupy/carray.cuh>\n" + body


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="compute_90", help="NVRTC's -arch (an H100: 90)")
    args = parser.parse_args(argv)
    import cupy
    from cupy.cuda import nvrtc

    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    failures = 0
    for name, spec in kernel_specs().items():
        for dtype in ("float32", "float64"):
            program = nvrtc.createProgram(cuda_source(spec, dtype), f"{name}.cu", [], [])
            options = [*spec[3], f"-arch={args.arch}", f"-I{include}", "--std=c++17"]
            try:
                nvrtc.compileProgram(program, options)
            except nvrtc.NVRTCError as err:
                failures += 1
                print(f"{name} {dtype}: does not compile ({err})\n{nvrtc.getProgramLog(program)}")
                continue
            ptx = nvrtc.getPTX(program)
            ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
            ops = FLOAT_OP.findall(ptx)
            # each must round on its own: no fused multiply-add, none left free to contract
            wrong = sorted({op for op in ops
                            if op.startswith(("fma", "mad")) or ".rn" not in op})
            failures += bool(wrong)
            print(f"{name} {dtype}: {len(ops)} floating-point operations, "
                  + (f"NOT each rounded on its own: {wrong}" if wrong else
                     "each rounded to nearest, no fused multiply-add"))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
