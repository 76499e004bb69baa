"""Training data: MNIST / Fashion-MNIST from IDX files, 2-D toy mixtures, and batches.

Image datasets are looked up in three places, in order:

1. ``data_dir`` (the CLI's ``--data-dir``): the folder holding the ``*-ubyte.gz`` files, or
   its parent holding ``mnist/``, ``fashion-mnist/`` or ``fashion-mnist-partial/`` (a
   data_dir that is not a folder is an error, not skipped);
2. the cache, ``cache_dir()/<name>/`` (``$TINYGAN_DATA``, else ``$XDG_CACHE_HOME/tinygan``,
   else ``~/.cache/tinygan``);
3. the official mirrors, downloading into the cache. A download lands in a temporary file
   beside its target and is renamed only once its published MD5 matches, so the cache never
   holds a half-written or corrupted file.

Local files are checked structurally (``read_idx``) but not by checksum, because partial
copies (e.g. the first 4,443 Fashion-MNIST test images) are legitimate; labels that begin
like the other dataset's official file are refused (``LABEL_SIGNATURES``). Everything here runs
on the host with NumPy; ``batches`` moves each batch to the active backend once.
"""

import gzip
import hashlib
import http.client
import math
import os
import sys
import tempfile
import time
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygan import backend, files
from tinygan.nn.module import is_int

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test", "all")

# Official download locations, tried in order; override per call (``mirrors=``) or with
# $TINYGAN_MIRROR (comma-separated base URLs), e.g. to point tests at a local server.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# Published MD5 of each .gz file, as listed by the dataset authors (and torchvision).
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# (images file, labels file) of each split, and how many images the official files hold.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
OFFICIAL_COUNTS = {"train": 60_000, "test": 10_000}

# Sub-folders of a data_dir (or of the cache) that may hold each dataset, best first.
SUBFOLDERS = {
    "mnist": ("mnist",),
    "fashion-mnist": ("fashion-mnist", "fashion-mnist-partial"),
}

# First five labels of each official labels file. Both datasets use the same file names, so a
# data_dir holding the other dataset's files is caught by its labels, not by its name.
LABEL_SIGNATURES = {
    "mnist": {"train": (5, 0, 4, 1, 9), "test": (7, 2, 1, 0, 4)},
    "fashion-mnist": {"train": (9, 0, 0, 3, 0), "test": (9, 2, 1, 1, 6)},
}

DOWNLOAD_TIMEOUT_S = 30  # per read: a mirror silent this long is given up
DOWNLOAD_DEADLINE_S = 900  # per file: a mirror trickling bytes is given up too
MAX_DOWNLOAD_BYTES = 64 << 20  # the largest official file is ~26 MB gzipped; no endless body


class DataError(ValueError):
    """Data that cannot be used: a damaged or mismatched file, or a dataset not found."""


# ---------------------------------------------------------------------------- IDX files

# IDX type codes (third magic byte) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path):
    """The file's bytes, decompressed when its name ends in .gz."""
    path = Path(path)
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except gzip.BadGzipFile as err:  # the reason tells a wrong format from a failed CRC
        raise DataError(f"{path}: not a valid gzip file ({err})") from None
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream") from None
    except zlib.error as err:
        raise DataError(f"{path}: corrupt gzip data ({err})") from None


def read_idx(path):
    """Read an IDX file (gzip or plain) into a NumPy array of its declared type and shape.

    Layout: a 4-byte big-endian magic ``0x00 0x00 <type> <ndim>`` (0x0803 for ubyte images,
    0x0801 for ubyte labels), then ``ndim`` big-endian uint32 sizes, then the values.
    Any inconsistency raises ``DataError`` naming the file, so a damaged download never
    turns silently into wrong training data.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: bad IDX magic 0x{raw[:4].hex()} (expected 0x000008NN)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod would overflow
    payload = len(raw) - header
    if payload != expected:
        what = "truncated" if payload < expected else "trailing bytes"
        raise DataError(
            f"{path}: {what}: header sizes {shape} need {expected} bytes of data, "
            f"file has {payload}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def _read_pair(images_path, labels_path):
    """Read and cross-check one split's image and label files; returns uint8, int64 arrays."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path}: expected ubyte images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path}: expected 1-D ubyte labels, got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(images) == 0:  # caught here, not later as a "zero-size array" deep in training
        raise DataError(f"{images_path}: holds 0 images; expected at least one")
    if labels.max() > 9:
        raise DataError(f"{labels_path}: label {labels.max()} outside 0..9")
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------ finding files


def cache_dir():
    """Where downloads are kept: $TINYGAN_DATA, else $XDG_CACHE_HOME/tinygan, else
    ~/.cache/tinygan. Each dataset lives in its own sub-folder (``mnist/``, ...)."""
    if os.environ.get("TINYGAN_DATA", "").strip():  # a blank value is unset, not a folder " "
        return Path(os.environ["TINYGAN_DATA"].strip()).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "tinygan"


def _search_dirs(name, data_dir):
    """Folders that may hold ``name``'s files, in lookup order (data_dir, then cache)."""
    dirs = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        dirs += [root / sub for sub in SUBFOLDERS[name]] + [root]
    cache = cache_dir()
    return dirs + [cache / sub for sub in SUBFOLDERS[name]]


def _file_in(folder, filename):
    """``folder/filename``, or its uncompressed twin, when either exists."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _find_split(name, split, data_dir):
    """(images path, labels path) of the first folder holding both files, else None."""
    for folder in _search_dirs(name, data_dir):
        paths = [_file_in(folder, f) for f in FILES[split]]
        if all(paths):
            return tuple(paths)
    return None


# ---------------------------------------------------------------------------- downloads


def _mirrors(name, mirrors):
    """The base URLs to try: the argument, else $TINYGAN_MIRROR, else MIRRORS[name]."""
    if mirrors is None and os.environ.get("TINYGAN_MIRROR"):
        mirrors = os.environ["TINYGAN_MIRROR"].split(",")
    bases = MIRRORS[name] if mirrors is None else mirrors
    return [b.strip().rstrip("/") + "/" for b in bases if b.strip()]


def _md5(path):
    """Hex MD5 of a file, read in chunks so a large file is never held twice in memory."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url, dest):
    """Stream ``url`` into the open binary file ``dest``; OSError when it cannot be fetched:
    unreachable, cut off before its Content-Length, larger than MAX_DOWNLOAD_BYTES, or
    slower than DOWNLOAD_DEADLINE_S allows."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "tinygan"})
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except ValueError as err:  # a malformed URL ("unknown url type"): skip it like a dead mirror
        raise OSError(err) from None
    start, received = time.monotonic(), 0
    with response:
        announced = response.headers.get("Content-Length")
        expected = int(announced) if announced and announced.isdigit() else None
        for chunk in iter(lambda: response.read(1 << 16), b""):
            received += len(chunk)
            if received > MAX_DOWNLOAD_BYTES:
                raise OSError(f"more than {MAX_DOWNLOAD_BYTES >> 20} MB: not a dataset file")
            if time.monotonic() - start > DOWNLOAD_DEADLINE_S:
                raise OSError(f"still downloading after {DOWNLOAD_DEADLINE_S} s "
                              f"({received:,} bytes)")
            dest.write(chunk)
    if expected is not None and received < expected:
        raise OSError(f"the connection closed after {received:,} of {expected:,} bytes")


def remove_stale_parts(folder, filename):
    """Delete temporary files that a killed download of ``filename`` left (SIGKILL gives no
    chance to clean up). One older than a download may last is no other process's."""
    too_old = time.time() - (DOWNLOAD_DEADLINE_S + 2 * DOWNLOAD_TIMEOUT_S)
    for part in folder.glob(f".{filename}.*.part"):
        try:
            if part.stat().st_mtime < too_old:
                part.unlink()
        except OSError:  # gone already, or not ours to delete: leave it
            pass


def download_file(filename, md5, target_dir, mirrors):
    """Download ``filename`` from the first mirror that answers into ``target_dir``.

    The bytes go to a hidden temporary file in ``target_dir`` (same file system, so the
    final ``os.replace`` is atomic); it becomes ``target_dir/filename`` only once its MD5
    equals ``md5``. A mismatch deletes it and raises ``DataError``: a mirror serving wrong
    bytes is a problem to report, not to paper over. The final file gets the usual umask-based
    mode (mkstemp's 0600 would hide a shared cache from other users). Returns the final path,
    or raises ``OSError`` listing every mirror's error when none could be reached.
    """
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target_dir, filename)
    errors = []
    for base in mirrors:
        url = base + filename
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target_dir)
        try:
            print(f"tinygan: downloading {url}", file=sys.stderr)
            with os.fdopen(fd, "wb") as dest:
                _fetch(url, dest)
            actual = _md5(tmp)
            if actual != md5:
                raise DataError(
                    f"{url}: MD5 {actual} does not match the published {md5}; "
                    "the download was deleted"
                )
            os.chmod(tmp, files.default_mode())  # mkstemp's 0o600 would hide it from others
            os.replace(tmp, target_dir / filename)
            return target_dir / filename
        except (OSError, http.client.HTTPException) as err:
            # unreachable or broken mirror: note why, in one line, and try the next
            errors.append(f"{url}: {files.first_line(err)}")
        finally:
            if os.path.exists(tmp):  # anything but success leaves no partial file behind
                os.remove(tmp)
    raise OSError("; ".join(errors) or "no mirror configured")


def _download_split(name, split, mirrors, data_dir=None):
    """Download a split's two files into the cache; one-line DataError when offline, naming
    the folders that were searched first (data_dir's among them)."""
    target = cache_dir() / SUBFOLDERS[name][0]
    try:  # a cache that cannot hold the files is not a download failure: say what it is
        files.check_writable(target, "download cache (TINYGAN_DATA)")
    except OSError as err:
        raise DataError(f"{name}: {err}; point TINYGAN_DATA at a folder tinygan may write, "
                        "or pass data_dir (--data-dir) with the files") from None
    created = [d for d in (target.parent, target) if not d.exists()]  # made for the download
    bases = _mirrors(name, mirrors)
    reason = None
    for filename in FILES[split]:
        if not _file_in(target, filename):
            try:
                download_file(filename, CHECKSUMS[name][filename], target, bases)
            except OSError as err:
                reason = err
                break  # the next file would wait on the same dead mirrors: give up now
    missing = [f for f in FILES[split] if not _file_in(target, f)]
    if missing:
        for folder in reversed(created):  # leave no empty folder behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        where = ", ".join(str(d) for d in _search_dirs(name, data_dir))
        raise DataError(
            f"{name}: {', '.join(missing)} not found in {where} and could not be downloaded "
            f"({reason}); put them in {target} or pass data_dir (--data-dir) pointing at them"
            + _half_pairs(name, [split], data_dir)
        )
    return tuple(_file_in(target, f) for f in FILES[split])


# ------------------------------------------------------------------------------ loading


def _half_pairs(name, splits, data_dir):
    """"; FOLDER holds A but not B" for every searched folder with one file of a pair: the
    usual cause of "not found" when the user can see the files there."""
    notes = []
    for split in splits:
        for folder in _search_dirs(name, data_dir):
            present = [f for f in FILES[split] if _file_in(folder, f)]
            if len(present) == 1:
                other = next(f for f in FILES[split] if f not in present)
                notes.append(f"; {folder} holds {present[0]} but not {other}")
    return "".join(notes)


def _missing_error(name, splits, data_dir):
    """The one-line error for a dataset absent locally when downloads are disabled."""
    files = [f for s in splits for f in FILES[s]]
    where = [str(d) for d in _search_dirs(name, data_dir)]
    return DataError(
        f"{name}: {', '.join(files)} not found in {', '.join(where)} and download is off; "
        f"put them in {cache_dir() / SUBFOLDERS[name][0]} or pass data_dir (--data-dir)"
        + _half_pairs(name, splits, data_dir)
    )


def _check_identity(name, split, labels, labels_path):
    """Refuse labels that begin like the other dataset's official file of the same split."""
    other = next(d for d in DATASETS if d != name)
    signature = LABEL_SIGNATURES[other][split]
    if tuple(labels[: len(signature)].tolist()) == signature:
        raise DataError(
            f"{labels_path}: these are {other}'s labels, not {name}'s (they begin "
            f"{', '.join(map(str, signature))} like {other}'s official {FILES[split][1]}); "
            f"point data_dir (--data-dir) at the {name} files"
        )


def _load_split(name, split, paths, notes):
    """Read one split's files; notes a partial copy (fewer images than the official set)."""
    try:
        images, labels = _read_pair(*paths)
    except DataError as err:
        cache = cache_dir().resolve()
        if any(cache in Path(path).resolve().parents for path in paths):  # ours: say the cure
            raise DataError(f"{err}; it is in tinygan's download cache: delete it to "
                            "download it again") from None
        raise
    _check_identity(name, split, labels, paths[1])
    if len(images) < OFFICIAL_COUNTS[split]:
        notes.append(
            f"{paths[0]} holds {len(images):,} of the official {OFFICIAL_COUNTS[split]:,} "
            f"{split} images (partial copy)"
        )
    return images, labels


def load_dataset(name, data_dir=None, split="train", download=True, *, mirrors=None):
    """Load MNIST or Fashion-MNIST as ``(images, labels)``.

    ``images``: float32 (N, 1, 28, 28) scaled to [-1, 1] (pixel / 127.5 - 1, matching a
    tanh generator); ``labels``: int64 (N,). ``split`` is "train", "test" (the t10k files)
    or "all" (train + test, whatever is present). Local files win over downloads; when
    "train" is wanted but only the test files are local, those are used with a warning, as
    is any partial copy. ``mirrors`` (base URLs) overrides MIRRORS and $TINYGAN_MIRROR.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():  # a typo, not a cache hit
        raise DataError(f"data_dir {data_dir}: no such folder")
    wanted = ["train", "test"] if split == "all" else [split]
    found = {s: _find_split(name, s, data_dir) for s in FILES}
    notes = []
    use = [s for s in wanted if found[s]]
    if not use and split == "train" and found["test"]:
        use = ["test"]  # the common offline case: only the MNIST test set is at hand
        notes.append(f"no train files found, using the test split from {found['test'][0].parent}"
                     + _half_pairs(name, ["train"], data_dir))
    if not use:
        if not download:
            raise _missing_error(name, wanted, data_dir)
        found.update({s: _download_split(name, s, mirrors, data_dir) for s in wanted})
        use = wanted
    if split == "all" and len(use) == 1:
        notes.append(f"only the {use[0]} split is present")
    parts = [_load_split(name, s, found[s], notes) for s in use]
    if notes:
        warnings.warn(f"{name}: " + "; ".join(notes), stacklevel=2)
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images = images.astype(np.float32)[:, None] / np.float32(127.5) - np.float32(1.0)
    return images, labels


# ------------------------------------------------------------------------- toy mixtures


@dataclass(frozen=True)
class ToyMixture:
    """An equal-weight mixture of isotropic 2-D Gaussians: ``centres`` (K, 2), std ``sigma``.

    The evaluation code reads ``centres`` and ``sigma`` to count covered modes.
    """

    centres: np.ndarray
    sigma: float

    def sample(self, n, rng=None):
        """``n`` points, float32 (n, 2), and the int64 index of the component of each."""
        rng = backend.host_rng() if rng is None else rng
        component = rng.integers(len(self.centres), size=n)
        noise = rng.standard_normal((n, 2)) * self.sigma
        return (self.centres[component] + noise).astype(np.float32), component.astype(np.int64)


def _ring_centres(k=8, radius=1.0):
    """``k`` points evenly spaced on a circle, at angles 2*pi*i/k."""
    angles = 2 * np.pi * np.arange(k) / k
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid_centres(values=(-4, -2, 0, 2, 4)):
    """Every (x, y) pair with x, y in ``values``: a 5 x 5 grid by default."""
    xs, ys = np.meshgrid(values, values, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


# The mode-collapse benchmarks of VEEGAN / PacGAN: 8 Gaussians on the unit circle with
# sigma 0.01, and 25 Gaussians on a grid with sigma 0.05.
TOY_DATASETS = {
    "ring": ToyMixture(_ring_centres(), 0.01),
    "grid": ToyMixture(_grid_centres(), 0.05),
}


def ring(n, rng=None):
    """``n`` samples of the 8-Gaussian ring: (points float32 (n, 2), components int64 (n,))."""
    return TOY_DATASETS["ring"].sample(n, rng)


def grid(n, rng=None):
    """``n`` samples of the 25-Gaussian grid: (points float32 (n, 2), components int64 (n,))."""
    return TOY_DATASETS["grid"].sample(n, rng)


# ------------------------------------------------------------------------------ batches


def batches(images, labels, batch_size, rng=None, drop_last=True, dtype=None):
    """One epoch of ``(x, y)`` batches in a fresh random order, each moved to the backend.

    The order comes from ``rng`` (default: the seeded ``backend.host_rng()``), so a seed
    fixes every epoch's shuffle. ``labels`` may be None (toy data without classes), then
    ``y`` is None. ``dtype`` casts ``x`` on the way to the device (default: keep it).
    Call again for the next epoch. Arguments are checked here, not at the first batch.
    """
    n = len(images)
    if not (is_int(batch_size) and batch_size >= 1):  # 2.0 would fail at the first batch
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if drop_last and n < batch_size:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} samples: no full batch")
    order = (backend.host_rng() if rng is None else rng).permutation(n)
    stop = n - n % batch_size if drop_last else n
    return _batch_generator(images, labels, order, batch_size, stop, dtype)


def _batch_generator(images, labels, order, batch_size, stop, dtype):
    """Yield the batches of ``batches``; the index copy happens on the host, once."""
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x = backend.to_device(images[idx], dtype)
        y = None if labels is None else backend.to_device(labels[idx])
        yield x, y
