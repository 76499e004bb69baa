"""Plumbing shared by the benchmark scripts.

Every measurement runs in a fresh worker process (``python <script> --worker SPEC``)
whose thread counts are fixed through OMP_NUM_THREADS / OPENBLAS_NUM_THREADS /
MKL_NUM_THREADS *before* NumPy or PyTorch is imported (and torch.set_num_threads).
tinygan on NumPy uses its N threads as ``--threading`` says: ``tinygan`` (the default)
splits its own work over them (TINYGAN_THREADS=N) with BLAS on one thread,
``blas`` leaves tinygan unsplit and gives BLAS the N threads (see tinygan/parallel.py).
The parent process only orchestrates: it alternates the programs it compares run by
run, so that a slow patch of a shared machine hits both, and reports medians with
the min and max over runs.
"""

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
THREADINGS = ("tinygan", "blas")  # how tinygan on NumPy uses its threads (--threading)
# the instruction sets of PyTorch's ATen, oneDNN and MKL
TORCH_ISA_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# settings in the environment that change what is measured, recorded with the results:
# OpenBLAS's kernel family and cache size (NumPy), PyTorch's instruction sets, glibc's
# allocator (which Trainer sets for tinygan itself, see backend.keep_freed_memory)
SETTING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *TORCH_ISA_VARS,
                "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "CUPY_TF32")


# -- the parent side -------------------------------------------------------------------

@functools.cache
def have_torch():
    """Whether torch imports here (asked in a child process, see ask_torch): an installed
    but broken torch counts as none, rather than failing in every worker."""
    return importlib.util.find_spec("torch") is not None and ask_torch("1") == "1"


def add_common_arguments(parser, batch=(64, 256)):
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy",
                        help="tinygan's array backend (cupy: on the GPU, torch on cuda)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU thread counts to measure (each in its own processes)")
    parser.add_argument("--batch", type=int, nargs="+", default=list(batch))
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs per program; programs alternate run by run")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--threading", choices=THREADINGS, default="tinygan",
                        help="how tinygan on NumPy uses the threads: split its own work "
                             "over them, BLAS on one (tinygan), or give them all to BLAS "
                             "(blas)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def ask_torch(expression):
    """str(expression) evaluated by torch in a child process, with this environment (so as
    the workers see it), or None; importing torch here would make the parent ~200 MB (see
    machine_info)."""
    code = f"import torch; print({expression})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def usable_cores():
    """The cores this process may run on (a container may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def torch_has_cuda():
    """Whether the installed torch sees a GPU."""
    return ask_torch("torch.cuda.is_available()") == "True"


@functools.cache
def torch_cpu_kernels():
    """The instruction set PyTorch's CPU kernels run with here ("AVX512", "AVX2", ...)."""
    return ask_torch("torch.backends.cpu.get_cpu_capability()")


def torch_wanted(args):
    if args.no_torch:
        return False
    if not have_torch():
        print("PyTorch is not installed: the PyTorch comparison is skipped "
              "(pip install torch to enable it).")
        return False
    if args.backend == "cupy" and not torch_has_cuda():  # e.g. the CPU build CI installs
        print("PyTorch has no CUDA here (a CPU-only build?): the PyTorch comparison on the "
              "GPU is skipped.")
        return False
    return True


def worker_env(threads, spec=None):
    """The environment of a worker with ``threads`` threads, used as the spec's
    ``threading`` says when the worker is tinygan on NumPy."""
    spec = spec or {}
    split = (spec.get("impl") == "tinygan" and spec.get("backend", "numpy") == "numpy"
             and spec.get("threading") == "tinygan")
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = "1" if split else str(threads)
    env["TINYGAN_THREADS"] = str(threads) if split else "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_worker(script, spec, threads, timeout=1800):
    """Run ``python script --worker JSON`` with ``threads`` threads; return its JSON reply."""
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=worker_env(threads, spec), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(script, specs, threads, rounds):
    """Run every spec ``rounds`` times, cycling through the specs each round.

    Returns one list of replies per spec (same order as ``specs``).
    """
    replies = [[] for _ in specs]
    for round_ in range(rounds):
        order = list(enumerate(specs))
        if round_ % 2:  # every other round the other way round: no program always goes first
            order.reverse()
        for i, spec in order:  # a spec may name threads of its own
            replies[i].append(run_worker(script, spec, spec.get("threads", threads)))
    return replies


def stats(values):
    """{'median', 'min', 'max'} of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio_stats(ours, theirs):
    """Ratio of medians, and the min / max of the per-round ratios (rounds are paired)."""
    per_round = [a / b for a, b in zip(ours, theirs)]
    return {"median": statistics.median(ours) / statistics.median(theirs),
            "min": min(per_round), "max": max(per_round)}


def fmt_ms(seconds):
    return f"{1000 * seconds:8.2f}"


def fmt_ratio(r):
    return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def print_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print()


def machine_info():
    """CPU model and core count from /proc/cpuinfo, and library versions."""
    model, cores = platform.processor() or "unknown", os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": model, "cores": cores, "python": platform.python_version()}
    import numpy

    info["numpy"] = numpy.__version__
    core = openblas_core()
    if core:
        info["openblas_kernels"] = core
    for var in SETTING_VARS:
        if os.environ.get(var):
            info[var] = os.environ[var]
    gpu = gpu_name()
    if gpu:
        info["gpu"] = gpu
    if have_torch():
        # the installed version, without importing torch: the parent would then be
        # ~200 MB, and Linux starts a child's peak RSS (ru_maxrss) at its parent's size
        info["torch"] = importlib.metadata.version("torch")
        info["torch_cpu_kernels"] = torch_cpu_kernels()
    return info


def gpu_name():
    """The first NVIDIA GPU's name and driver, from nvidia-smi (None without one)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[0].replace(", ", ", driver ") if proc.returncode == 0 and lines else None


def openblas_core():
    """The kernel family NumPy's bundled OpenBLAS runs with ("Haswell", "SkylakeX", ...),
    or None when that cannot be asked (another BLAS, another build)."""
    import ctypes
    import glob

    import numpy

    libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs",
                                  "lib*openblas*.so*"))
    for lib in libs:
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(handle, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


def print_machine():
    info = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    if info.get("OPENBLAS_CORETYPE"):
        print(f"note: OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']} is set in the environment; it "
              f"overrides OpenBLAS's own choice of kernels for this CPU")
    capped = [f"{var}={info[var]}" for var in TORCH_ISA_VARS if info.get(var)]
    if capped:
        print(f"note: the environment limits PyTorch's kernels to an instruction set: "
              f"{', '.join(capped)}")


def write_json(path, payload):
    if path:
        payload = dict(payload, machine=machine_info(), when=time.strftime("%Y-%m-%d %H:%M"))
        path.write_text(json.dumps(payload, indent=1))
        print(f"results written to {path}")


# -- the worker side -------------------------------------------------------------------

def start_worker(spec):
    """In a worker: pick tinygan's backend and torch's thread count, per the spec."""
    if spec.get("impl") == "torch":
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        torch.manual_seed(0)
        if spec.get("backend") == "cupy":
            # full float32 on the GPU, as CuPy computes (CUPY_TF32 unset): PyTorch lets
            # cuDNN's convolutions round their inputs to TF32 by default
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
    else:
        from tinygan import backend

        # the backend the spec names, whatever TINYGAN_BACKEND says; use() seeds it with 0
        backend.use(spec.get("backend", "numpy"))


def synchronizer(spec):
    """A function that waits for the device to finish (a no-op on the CPU)."""
    if spec.get("backend") == "cupy":
        if spec.get("impl") == "torch":
            import torch

            return torch.cuda.synchronize
        import cupy

        return lambda: cupy.cuda.get_current_stream().synchronize()
    return lambda: None


def time_calls(fn, repeats, warmup, sync):
    """Wall-clock seconds of each of ``repeats`` calls of fn(), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def reply(payload):
    """A worker's answer: one JSON line on stdout."""
    print(json.dumps(payload))


def check_backend(name):
    """Exit with one line unless tinygan can run on ``name`` here (no GPU, no CuPy), rather
    than with a worker's traceback. Asked in a child process: CuPy loaded in this one
    would count in the workers' peak memory (see machine_info)."""
    if name == "numpy":
        return
    code = f"from tinygan import backend; backend.use({name!r})"
    proc = subprocess.run([sys.executable, "-c", code], env=worker_env(1),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["it failed"])[-1]
        sys.exit(f"--backend {name}: {last.split(': ', 1)[-1]}")  # without "RuntimeError: "


def programs(args):
    """Check the backend, print the machine, then the programs to compare: tinygan, and
    torch when wanted."""
    check_backend(args.backend)
    print_machine()
    return ["tinygan"] + (["torch"] if torch_wanted(args) else [])


def thread_counts(args):
    """The BLAS thread counts to time: --threads on the CPU; one run on a GPU, which has none."""
    return [1] if args.backend == "cupy" else args.threads
