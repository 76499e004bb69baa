"""tinygan.data: IDX reading, dataset lookup, verified downloads, toy mixtures, batches.

Downloads are tested against a server this file starts on 127.0.0.1; every other test
points the mirrors at a closed local port, so nothing here can reach the internet.
"""

import gzip
import hashlib
import os
import shutil
import time
import warnings

import numpy as np
import pytest
from helpers import write_idx
from http_server import closed_port_url, serve_directory, serve_not_http, serve_odd_responses

from tinygan import backend, data

IMAGES, LABELS = data.FILES["test"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Any download a test did not ask for hits a closed local port, never the internet."""
    monkeypatch.setenv("TINYGAN_MIRROR", closed_port_url())
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)  # urllib must talk to 127.0.0.1 directly


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty download cache in tmp_path."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TINYGAN_DATA", str(path))
    return path


@pytest.fixture
def real_data(data_dir, cache):
    """The shared real-data folder, with an empty cache so only data_dir can answer."""
    return data_dir


def write_split(folder, split, n, n_labels=None, suffix=".gz"):
    """Write a small synthetic split: image i is filled with value i, label i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = (f.removesuffix(".gz") + suffix for f in data.FILES[split])
    images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
    write_idx(folder / images_name, images)
    write_idx(folder / labels_name, np.arange(n if n_labels is None else n_labels) % 10)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("name", ["x-idx3-ubyte.gz", "x-idx3-ubyte"])
def test_read_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = data.read_idx(write_idx(tmp_path / name, array))
    assert out.dtype == np.uint8 and out.shape == (3, 28, 28)
    np.testing.assert_array_equal(out, array)


def test_read_idx_other_types_are_big_endian(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    path = tmp_path / "ints-idx1-int.gz"
    path.write_bytes(
        gzip.compress(bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + values.tobytes())
    )
    out = data.read_idx(path)
    np.testing.assert_array_equal(out, [1, -2, 70000])
    assert out.dtype == np.int32 and out.dtype.isnative and out.flags.writeable  # a native copy


def _damage(tmp_path, kind):
    """A damaged IDX file of the given kind; returns its path."""
    good = bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes([1, 2, 3, 4])
    path = tmp_path / "labels-idx1-ubyte.gz"
    raw = {
        "wrong magic": bytes([0x12, 0x34, 8, 1]) + good[4:],
        "unknown type": bytes([0, 0, 0x0A, 1]) + good[4:],
        "not idx": b"<html>404</html>",
        "short header": good[:6],
        "truncated": good[:-1],
        "trailing bytes": good + b"\0",
        "empty": b"",
        "three bytes": good[:3],
        "no dimensions": bytes([0, 0, 8, 0, 1]),
        # 65536^4 = 2^64 overflowed np.prod to 0 bytes: a bare reshape error followed
        "huge sizes": bytes([0, 0, 8, 4]) + (65536).to_bytes(4, "big") * 4 + bytes([1, 2, 3, 4]),
    }.get(kind, good)
    blob = gzip.compress(raw)
    if kind == "not gzip":
        blob = good
    elif kind == "truncated gzip":
        blob = blob[: len(blob) // 2]
    elif kind == "bad crc":
        blob = blob[:-8] + bytes([blob[-8] ^ 0xFF]) + blob[-7:]  # the trailer's CRC-32
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("wrong magic", "bad IDX magic 0x12340801"),
        ("unknown type", "bad IDX magic 0x00000a01"),
        ("not idx", "bad IDX magic"),
        ("short header", "truncated IDX header"),
        ("truncated", "truncated: header sizes (4,) need 4 bytes of data, file has 3"),
        ("trailing bytes", "trailing bytes"),
        ("empty", "too short"),
        ("three bytes", "only 3 bytes, too short"),
        ("no dimensions", "bad IDX magic 0x00000800"),
        ("huge sizes", f"truncated: header sizes {(65536,) * 4} need {2**64} bytes of data, "
                       "file has 4"),
        ("not gzip", "not a valid gzip file (Not a gzipped file"),
        ("bad crc", "not a valid gzip file (CRC check failed)"),
        ("truncated gzip", "truncated gzip"),
    ],
)
def test_read_idx_rejects_damaged_files(tmp_path, kind, message):
    path = _damage(tmp_path, kind)
    with pytest.raises(data.DataError, match="labels-idx1-ubyte.gz") as err:
        data.read_idx(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_image_label_count_mismatch(tmp_path, cache):
    write_split(tmp_path / "mnist", "test", n=5, n_labels=4)
    with pytest.raises(data.DataError, match="holds 5 images but .* holds 4 labels"):
        data.load_dataset("mnist", tmp_path, split="test")


def test_labels_file_in_place_of_images_rejected(tmp_path, cache):
    write_split(tmp_path, "test", n=3)
    shutil.copy(tmp_path / LABELS, tmp_path / IMAGES)  # magic 0x0801 where 0x0803 belongs
    with pytest.raises(data.DataError, match="expected ubyte images of shape"):
        data.load_dataset("mnist", tmp_path, split="test")


def test_images_that_are_not_28_by_28_rejected(tmp_path, cache):
    write_split(tmp_path, "test", n=3)
    write_idx(tmp_path / IMAGES, np.zeros((3, 28, 27), np.uint8))
    with pytest.raises(data.DataError, match=r"expected ubyte images of shape \(N, 28, 28\)"):
        data.load_dataset("mnist", tmp_path, split="test")


def test_images_of_another_idx_type_rejected(tmp_path, cache):
    """Right shape, wrong type: int32 values (IDX type 0x0C) where ubyte pixels belong."""
    write_split(tmp_path, "test", n=3)
    header = bytes([0, 0, 0x0C, 3]) + b"".join(d.to_bytes(4, "big") for d in (3, 28, 28))
    raw = header + np.zeros((3, 28, 28), ">i4").tobytes()
    (tmp_path / IMAGES).write_bytes(gzip.compress(raw))
    with pytest.raises(data.DataError, match=r"expected ubyte images of shape \(N, 28, 28\), "
                                             r"got int32 \(3, 28, 28\)"):
        data.load_dataset("mnist", tmp_path, split="test")


def test_labels_that_are_not_one_dimensional_rejected(tmp_path, cache):
    write_split(tmp_path, "test", n=3)
    write_idx(tmp_path / LABELS, np.zeros((3, 1), np.uint8))
    with pytest.raises(data.DataError, match="expected 1-D ubyte labels"):
        data.load_dataset("mnist", tmp_path, split="test")


def test_zero_images_rejected(tmp_path, cache):
    write_split(tmp_path, "test", n=0)  # a valid IDX pair that holds nothing
    with pytest.raises(data.DataError, match=f"{IMAGES}: holds 0 images; expected at least one"):
        data.load_dataset("mnist", tmp_path, split="test")


def test_labels_outside_0_9_rejected(tmp_path, cache):
    write_split(tmp_path, "test", n=11, n_labels=11)
    write_idx(tmp_path / LABELS, np.arange(11))  # 10, the first label past the classes
    with pytest.raises(data.DataError, match="label 10 outside 0..9"):
        data.load_dataset("mnist", tmp_path, split="test")


# ------------------------------------------------------------------ lookup and loading


def test_load_scales_to_minus_one_one(tmp_path, cache):
    write_split(tmp_path, "test", n=3)
    write_idx(tmp_path / IMAGES, np.array([0, 255, 51], np.uint8).repeat(784).reshape(3, 28, 28))
    with pytest.warns(UserWarning, match="3 of the official 10,000 test images"):
        images, labels = data.load_dataset("mnist", tmp_path, split="test")
    assert images.dtype == np.float32 and images.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(images[:, 0, 0, 0], [-1.0, 1.0, 51 / 127.5 - 1])
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2]


@pytest.mark.parametrize("layout", ["files", "mnist", "fashion-mnist", "fashion-mnist-partial"])
def test_data_dir_is_the_folder_or_its_parent(tmp_path, cache, layout):
    name = "mnist" if layout == "mnist" else "fashion-mnist"
    write_split(tmp_path if layout == "files" else tmp_path / layout, "test", n=4, suffix="")
    with pytest.warns(UserWarning, match="partial copy"):
        images, _ = data.load_dataset(name, tmp_path, split="test")
    assert len(images) == 4


def test_train_falls_back_to_test_with_a_warning(tmp_path, cache):
    write_split(tmp_path, "test", n=4)
    with pytest.warns(UserWarning, match="no train files found, using the test split"):
        images, _ = data.load_dataset("mnist", tmp_path, split="train")
    assert len(images) == 4


def test_all_concatenates_train_then_test(tmp_path, cache):
    write_split(tmp_path, "train", n=3)
    write_split(tmp_path, "test", n=2)
    with pytest.warns(UserWarning):
        images, labels = data.load_dataset("mnist", tmp_path, split="all")
    assert labels.tolist() == [0, 1, 2, 0, 1]
    os.remove(tmp_path / LABELS)  # the test split is no longer complete
    with pytest.warns(UserWarning, match="only the train split is present"):
        assert len(data.load_dataset("mnist", tmp_path, split="all")[0]) == 3


def test_cache_is_searched_after_data_dir(tmp_path, cache):
    write_split(cache / "fashion-mnist", "train", n=6)
    (tmp_path / "elsewhere").mkdir()  # a data_dir without the files
    with pytest.warns(UserWarning):
        images, _ = data.load_dataset("fashion-mnist", tmp_path / "elsewhere")
    assert len(images) == 6


def test_data_dir_wins_over_the_cache_and_the_full_fashion_folder_over_the_partial(tmp_path,
                                                                                  cache):
    write_split(cache / "fashion-mnist", "test", n=2)
    write_split(tmp_path / "fashion-mnist-partial", "test", n=3)
    write_split(tmp_path / "fashion-mnist", "test", n=4)
    with pytest.warns(UserWarning):
        assert len(data.load_dataset("fashion-mnist", tmp_path, split="test")[0]) == 4
    shutil.rmtree(tmp_path / "fashion-mnist")
    with pytest.warns(UserWarning):
        assert len(data.load_dataset("fashion-mnist", tmp_path, split="test")[0]) == 3


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_data_dir_that_is_not_a_folder_is_an_error(tmp_path, cache, kind):
    write_split(cache / "mnist", "test", n=4)  # the cache could answer, but must not be asked
    wrong = tmp_path / "typo"
    if kind == "file":
        wrong.write_text("not a folder")
    with pytest.raises(data.DataError) as err:
        data.load_dataset("mnist", wrong, split="test")
    assert str(err.value) == f"data_dir {wrong}: no such folder"


def test_missing_without_download_is_one_line(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda url, dest: pytest.fail(f"fetched {url}"))
    with pytest.raises(data.DataError) as err:
        data.load_dataset("mnist", tmp_path, split="test", download=False)
    message = str(err.value)
    assert "\n" not in message and IMAGES in message and LABELS in message
    assert "download is off" in message
    assert str(cache / "mnist") in message


def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load_dataset("cifar")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.load_dataset("mnist", split="val")


def test_cache_dir_respects_env(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYGAN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "tinygan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "tinygan"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "tinygan"
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "mine"))
    assert data.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("TINYGAN_DATA", "~/data")
    assert data.cache_dir() == tmp_path / "home" / "data"


# ---------------------------------------------------------------------------- real data


def test_real_mnist_test_split(real_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all 10,000 official test images: no partial-copy note
        images, labels = data.load_dataset("mnist", real_data, split="test", download=False)
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels.dtype == np.int64 and sorted(set(labels.tolist())) == list(range(10))
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits
    with pytest.warns(UserWarning, match="using the test split"):
        train_images, _ = data.load_dataset("mnist", real_data, download=False)
    np.testing.assert_array_equal(train_images, images)


def test_shared_mnist_holds_the_official_pixels(real_data):
    # Its .gz bytes differ from the published archives (re-gzipped, so CHECKSUMS would reject
    # it as a download) but the decompressed files match the published raw-file MD5s.
    raw = {IMAGES: "2646ac647ad5339dbf082846283269ea", LABELS: "27ae3e4e09519cfbb04c329615203637"}
    for name, expected in raw.items():
        blob = gzip.decompress((real_data / "mnist" / name).read_bytes())
        assert hashlib.md5(blob).hexdigest() == expected


def test_real_fashion_partial(real_data):
    with pytest.warns(UserWarning, match="4,443 of the official 10,000"):
        images, labels = data.load_dataset("fashion-mnist", real_data, split="test")
    assert images.shape == (4_443, 1, 28, 28)
    assert images.min() >= -1.0 and images.max() <= 1.0 and labels.max() <= 9


@pytest.mark.parametrize(
    "name, folder, other",
    [("fashion-mnist", "mnist", "mnist"), ("mnist", "fashion-mnist-partial", "fashion-mnist")],
)
@pytest.mark.parametrize("split", ["test", "train"])  # train falls back to the t10k files
def test_other_datasets_files_are_refused(real_data, name, folder, other, split):
    # Same file names in both datasets: only the labels tell MNIST from Fashion-MNIST.
    with pytest.raises(data.DataError) as err:
        data.load_dataset(name, real_data / folder, split=split, download=False)
    message = str(err.value)
    assert f"these are {other}'s labels, not {name}'s" in message and "\n" not in message
    assert f"point data_dir (--data-dir) at the {name} files" in message


def test_the_other_datasets_train_labels_are_refused(tmp_path, cache):
    """The train split has its own signature: MNIST's train labels begin 5, 0, 4, 1, 9."""
    write_split(tmp_path, "train", n=5)
    write_idx(tmp_path / data.FILES["train"][1], np.array([5, 0, 4, 1, 9]))
    with pytest.raises(data.DataError, match="these are mnist's labels, not fashion-mnist's"):
        data.load_dataset("fashion-mnist", tmp_path, split="train")


# ---------------------------------------------------------------------------- downloads


@pytest.fixture
def mirror(data_dir, tmp_path, monkeypatch):
    """A folder to serve: copies of the shared MNIST test files, trusted by CHECKSUMS.

    The shared copies are re-gzipped (same pixels as the official files, different .gz
    bytes), so their MD5 differs from the published one; the table is patched to theirs.
    """
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in (IMAGES, LABELS):
        shutil.copy(data_dir / "mnist" / name, folder / name)
        monkeypatch.setitem(data.CHECKSUMS["mnist"], name, md5(folder / name))
    return folder


def test_download_verifies_caches_and_renames(mirror, cache, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((a, b)) or real_replace(a, b))
    with serve_directory(mirror) as url:
        # the first mirror is down: the loader moves on to the next one
        images, labels = data.load_dataset("mnist", split="test", mirrors=[closed_port_url(), url])
    assert images.shape == (10_000, 1, 28, 28) and labels[0] == 7
    target = cache / "mnist"
    assert sorted(os.listdir(target)) == sorted([IMAGES, LABELS])  # no temp file left
    for name in (IMAGES, LABELS):
        assert md5(target / name) == md5(mirror / name)
    for src, dst in renames:  # each file was written beside its target, then renamed
        assert os.path.dirname(src) == str(target) and os.path.basename(src).startswith(".")
        assert str(dst).endswith(("idx3-ubyte.gz", "idx1-ubyte.gz"))
    assert len(renames) == 2
    # the server is gone and the mirror is closed: the cache answers on its own
    again, _ = data.load_dataset("mnist", split="test")
    np.testing.assert_array_equal(again, images)


def test_corrupted_download_fails_checksum_and_leaves_nothing(mirror, cache, monkeypatch):
    blob = bytearray((mirror / IMAGES).read_bytes())
    blob[1000] ^= 0xFF
    (mirror / IMAGES).write_bytes(bytes(blob))
    with serve_directory(mirror) as url:
        monkeypatch.setenv("TINYGAN_MIRROR", url)  # the env override, this time
        with pytest.raises(data.DataError, match=f"{IMAGES}: MD5 .* does not match"):
            data.load_dataset("mnist", split="test")
    assert os.listdir(cache / "mnist") == []


@pytest.fixture
def tiny_mirror(tmp_path, monkeypatch):
    """A folder to serve holding a small synthetic MNIST test split, trusted by CHECKSUMS."""
    folder = tmp_path / "tiny-mirror"
    write_split(folder, "test", n=5)
    for name in (IMAGES, LABELS):
        monkeypatch.setitem(data.CHECKSUMS["mnist"], name, md5(folder / name))
    return folder


def test_malformed_mirror_url_is_skipped_and_reported(tiny_mirror, cache, monkeypatch):
    with serve_directory(tiny_mirror) as url:
        with pytest.warns(UserWarning, match="partial copy"):
            images, _ = data.load_dataset("mnist", split="test", mirrors=["foo", url])
    assert len(images) == 5
    os.remove(cache / "mnist" / IMAGES)
    monkeypatch.setenv("TINYGAN_MIRROR", "foo")  # no scheme: urllib raises ValueError
    with pytest.raises(data.DataError, match="could not be downloaded .*unknown url type"):
        data.load_dataset("mnist", split="test")


def test_mirror_without_a_trailing_slash_and_one_that_does_not_speak_http(tiny_mirror, cache):
    """A base URL is a folder even without its final "/"; a mirror answering something that
    is not HTTP (http.client.HTTPException, not OSError) is skipped like a dead one."""
    with serve_not_http() as broken, serve_directory(tiny_mirror) as url:
        with pytest.warns(UserWarning, match="partial copy"):
            images, _ = data.load_dataset("mnist", split="test", mirrors=[broken, url.rstrip("/")])
    assert len(images) == 5


@pytest.mark.parametrize("kind, reason", [
    ("cut", "the connection closed after 4,096 of 1,048,576 bytes"),
    ("endless", "more than 1 MB: not a dataset file"),
    ("loop", "HTTP Error 302: The HTTP server returned a redirect error that would lead to "
             "an infinite loop."),
])
def test_a_mirror_that_cuts_off_streams_forever_or_loops_is_skipped_in_one_line(
        tiny_mirror, cache, monkeypatch, kind, reason):
    """A cut-off body was reported as an MD5 mismatch and the next mirror never tried; an
    endless one filled the disk; a redirect loop's error ran over several lines."""
    monkeypatch.setattr(data, "MAX_DOWNLOAD_BYTES", 1 << 20)
    with serve_odd_responses(kind) as odd, serve_directory(tiny_mirror) as url:
        with pytest.warns(UserWarning, match="partial copy"):
            assert len(data.load_dataset("mnist", split="test", mirrors=[odd, url])[0]) == 5
        os.remove(cache / "mnist" / IMAGES)
        with pytest.raises(data.DataError) as err:
            data.load_dataset("mnist", split="test", mirrors=[odd])
    message = str(err.value)
    assert "\n" not in message and f"{odd}{IMAGES}: {reason}" in message
    assert sorted(os.listdir(cache / "mnist")) == [LABELS]  # no .part file left


def test_a_trickling_mirror_is_given_up_after_the_deadline(tiny_mirror, cache, monkeypatch):
    monkeypatch.setattr(data, "DOWNLOAD_DEADLINE_S", 0)
    with serve_directory(tiny_mirror) as url:
        with pytest.raises(data.DataError, match=r"still downloading after 0 s \("):
            data.load_dataset("mnist", split="test", mirrors=[url])


def test_a_damaged_file_in_the_cache_says_how_to_get_it_again(cache, tmp_path):
    write_split(cache / "mnist", "test", n=5)
    blob = (cache / "mnist" / IMAGES).read_bytes()
    (cache / "mnist" / IMAGES).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="truncated gzip stream; it is in tinygan's "
                                             "download cache: delete it to download it again"):
        data.load_dataset("mnist", split="test", download=False)
    write_split(tmp_path / "mine", "test", n=5)  # a file of the user's own: no such advice
    (tmp_path / "mine" / IMAGES).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match="truncated gzip stream$"):
        data.load_dataset("mnist", tmp_path / "mine", split="test", download=False)


def test_a_cache_that_is_a_file_is_named_as_such(tmp_path, monkeypatch):
    """It was blamed on the download ("could not be downloaded ([Errno 20] Not a directory"),
    with the advice to put the files in a folder inside that file."""
    (tmp_path / "cachefile").write_text("not a folder\n")
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "cachefile"))
    with pytest.raises(data.DataError, match=r"^mnist: download cache \(TINYGAN_DATA\) "
                                             f"{tmp_path / 'cachefile' / 'mnist'}: "
                                             f"{tmp_path / 'cachefile'} is a file, not a folder"):
        data.load_dataset("mnist", split="test", mirrors=[closed_port_url()])


def test_a_killed_downloads_temporary_file_is_removed_by_the_next_download(tiny_mirror, cache):
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    stale, fresh = folder / f".{IMAGES}.abc123.part", folder / f".{IMAGES}.def456.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"another process's download, under way")
    old = time.time() - data.DOWNLOAD_DEADLINE_S - 3 * data.DOWNLOAD_TIMEOUT_S
    os.utime(stale, (old, old))
    with serve_directory(tiny_mirror) as url:
        with pytest.warns(UserWarning, match="partial copy"):
            data.load_dataset("mnist", split="test", mirrors=[url])
    assert not stale.exists() and fresh.exists()


def test_a_folder_with_one_file_of_a_pair_is_named(tmp_path, cache):
    """With only the images in data_dir, the error listed both files as not found there."""
    write_split(tmp_path / "dd", "test", n=5)
    os.remove(tmp_path / "dd" / LABELS)
    with pytest.raises(data.DataError, match=f"; {tmp_path / 'dd'} holds {IMAGES} but not "
                                             f"{LABELS}$"):
        data.load_dataset("mnist", tmp_path / "dd", split="test", download=False)
    write_split(tmp_path / "dd", "test", n=5)
    write_idx(tmp_path / "dd" / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    with pytest.warns(UserWarning, match="no train files found, using the test split from "
                                         f".*; {tmp_path / 'dd'} holds train-images-idx3-ubyte.gz "
                                         "but not train-labels-idx1-ubyte.gz"):
        data.load_dataset("mnist", tmp_path / "dd", split="train", download=False)


def test_a_blank_tinygan_data_is_no_folder_name(monkeypatch):
    monkeypatch.setenv("TINYGAN_DATA", " ")
    assert data.cache_dir().name == "tinygan" and data.cache_dir().is_absolute()


def test_only_the_missing_file_is_downloaded_and_a_fetched_one_is_kept(tiny_mirror, cache,
                                                                        monkeypatch):
    """A file already in the cache is not fetched again; when the other one then fails, the
    fetched file stays in the cache for the next attempt."""
    fetched = []
    real_fetch = data._fetch
    monkeypatch.setattr(
        data, "_fetch", lambda url, dest: fetched.append(url) or real_fetch(url, dest)
    )
    write_split(cache / "mnist", "test", n=5)
    os.remove(cache / "mnist" / IMAGES)
    os.remove(tiny_mirror / LABELS)  # the mirror could not serve the cached file
    with serve_directory(tiny_mirror) as url:
        with pytest.warns(UserWarning, match="partial copy"):
            assert len(data.load_dataset("mnist", split="test", mirrors=[url])[0]) == 5
        assert fetched == [url + IMAGES]
        os.remove(cache / "mnist" / LABELS)
        with pytest.raises(data.DataError, match=f"{LABELS} not found in .*HTTP Error 404"):
            data.load_dataset("mnist", split="test", mirrors=[url])
    assert os.listdir(cache / "mnist") == [IMAGES]


def test_download_stops_at_the_first_unavailable_file(tmp_path, cache, monkeypatch):
    fetched = []
    real_fetch = data._fetch
    monkeypatch.setattr(
        data, "_fetch", lambda url, dest: fetched.append(url) or real_fetch(url, dest)
    )
    (tmp_path / "empty").mkdir()
    searched = tmp_path / "searched"
    searched.mkdir()
    with serve_directory(tmp_path / "empty") as url:  # answers 404 to everything
        with pytest.raises(data.DataError, match=f"{IMAGES}, {LABELS} not found in {searched}/"):
            data.load_dataset("mnist", searched, split="test", mirrors=[url])
    assert fetched == [url + IMAGES]  # the labels file would only wait on the same mirror
    assert not (cache / "mnist").exists()  # the folder made for the download is gone again


def test_a_folder_made_for_a_download_keeps_the_file_fetched_into_it(tiny_mirror, cache):
    """The images arrive, the labels do not: the error names the labels, and the new cache
    folder stays, holding the images for the next attempt (only an empty one is removed)."""
    os.remove(tiny_mirror / LABELS)
    with serve_directory(tiny_mirror) as url:
        with pytest.raises(data.DataError, match=f"{LABELS} not found in .*HTTP Error 404"):
            data.load_dataset("mnist", split="test", mirrors=[url])
    assert os.listdir(cache / "mnist") == [IMAGES]


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_downloaded_files_get_the_umask_mode(tiny_mirror, cache, umask):
    previous = os.umask(umask)
    try:
        with serve_directory(tiny_mirror) as url, pytest.warns(UserWarning):
            data.load_dataset("mnist", split="test", mirrors=[url])
        assert os.umask(umask) == umask  # the loader left the umask as it found it
    finally:
        os.umask(previous)
    for name in (IMAGES, LABELS):  # as if created by open(), not mkstemp's private 0600
        assert os.stat(cache / "mnist" / name).st_mode & 0o777 == 0o666 & ~umask


def test_unreachable_mirror_gives_one_line_offline_error(cache):
    with pytest.raises(data.DataError) as err:
        data.load_dataset("fashion-mnist", split="train", mirrors=[closed_port_url()])
    message = str(err.value)
    assert "\n" not in message and "could not be downloaded" in message
    assert "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message
    assert f"put them in {cache / 'fashion-mnist'} or pass" in message  # not ...-partial
    assert not (cache / "fashion-mnist").exists()  # no partial file, nor the folder made for it
    assert not cache.exists()  # nor the cache folder, made for it too
    cache.mkdir()  # a cache folder that was there before is left alone
    with pytest.raises(data.DataError):
        data.load_dataset("fashion-mnist", split="train", mirrors=[closed_port_url()])
    assert cache.is_dir() and not any(cache.iterdir())


# -------------------------------------------------------------------------- toy mixtures


def test_ring_has_8_modes_on_the_unit_circle():
    ring = data.TOY_DATASETS["ring"]
    assert ring.centres.shape == (8, 2) and ring.sigma == 0.01
    assert len({tuple(np.round(c, 6)) for c in ring.centres}) == 8
    np.testing.assert_allclose(np.linalg.norm(ring.centres, axis=1), 1.0)
    angles = np.arctan2(ring.centres[:, 1], ring.centres[:, 0]) % (2 * np.pi)
    np.testing.assert_allclose(angles, 2 * np.pi * np.arange(8) / 8, atol=1e-12)
    points, component = data.ring(8000)
    assert points.dtype == np.float32 and points.shape == (8000, 2)
    assert component.dtype == np.int64 and set(component.tolist()) == set(range(8))
    residual = points - ring.centres[component]
    np.testing.assert_allclose(residual.std(axis=0), 0.01, rtol=0.05)


def test_grid_has_25_modes():
    grid = data.TOY_DATASETS["grid"]
    expected = {(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}
    assert {tuple(c) for c in grid.centres.tolist()} == expected and grid.sigma == 0.05
    points, component = data.grid(10_000)
    assert set(component.tolist()) == set(range(25))
    np.testing.assert_allclose((points - grid.centres[component]).std(axis=0), 0.05, rtol=0.05)


def test_toy_samples_follow_the_seed():
    backend.seed(3)
    first = data.ring(50)[0]
    backend.seed(3)
    np.testing.assert_array_equal(data.ring(50)[0], first)
    np.testing.assert_array_equal(
        data.grid(5, np.random.default_rng(1))[0], data.grid(5, np.random.default_rng(1))[0]
    )


def test_toy_samples_come_from_the_host_generator():
    """Toy data lives on the host: sampling it leaves the device generator where it was."""
    backend.seed(4)
    expected = backend.to_host(backend.rng().standard_normal(3))
    backend.seed(4)
    data.ring(10)
    data.grid(10)
    np.testing.assert_array_equal(backend.to_host(backend.rng().standard_normal(3)), expected)


# ------------------------------------------------------------------------------ batches


def _epoch(**kwargs):
    x = np.arange(10, dtype=np.float32).reshape(10, 1) * np.ones((1, 3), np.float32)
    return [
        (backend.to_host(a), None if b is None else backend.to_host(b))
        for a, b in data.batches(x, np.arange(10), **kwargs)
    ]


def test_batches_shapes_and_drop_last():
    full = _epoch(batch_size=4)
    assert [a.shape for a, _ in full] == [(4, 3), (4, 3)]
    ragged = _epoch(batch_size=4, drop_last=False)
    assert [len(b) for _, b in ragged] == [4, 4, 2]
    assert sorted(np.concatenate([b for _, b in ragged]).tolist()) == list(range(10))
    for a, b in ragged:  # images and labels stay paired through the shuffle
        np.testing.assert_array_equal(a[:, 0], b)


def test_batches_shuffle_is_reproducible_by_seed():
    backend.seed(7)
    first, second = _epoch(batch_size=5), _epoch(batch_size=5)
    backend.seed(7)
    assert [b.tolist() for _, b in _epoch(batch_size=5)] == [b.tolist() for _, b in first]
    assert [b.tolist() for _, b in second] != [b.tolist() for _, b in first]  # new epoch order


def test_batches_take_their_order_from_the_given_rng():
    order = [b.tolist() for _, b in _epoch(batch_size=5, rng=np.random.default_rng(3))]
    assert order == np.random.default_rng(3).permutation(10).reshape(2, 5).tolist()


def test_batches_without_labels_and_with_dtype():
    points, _ = data.ring(6)
    ((x, y),) = list(data.batches(points, None, 6, dtype="float64"))
    assert y is None and backend.to_host(x).dtype == np.float64 and x.shape == (6, 2)


def test_batches_reject_bad_arguments():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="exceeds the 3 samples"):
        data.batches(x, None, 4)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        data.batches(x, np.zeros(2), 2)
    for bad in (0, 2.0, 1.5, True):  # a float used to fail only at the first batch
        with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {bad}"):
            data.batches(x, None, bad)
    assert [b.shape for b, _ in data.batches(x, None, 1)] == [(1, 2)] * 3  # the smallest
