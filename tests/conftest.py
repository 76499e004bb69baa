"""Shared fixtures: the real-data folder and the backend under test.

The backend under test is the one tinygan.backend picked up from TINYGAN_BACKEND
(NumPy by default), so `TINYGAN_BACKEND=cupy pytest` runs every test on CuPy.
"""

import os

# The tests multiply small matrices, where BLAS threads cost more than they save and, on a
# shared 2-core machine, oversubscribe it (10x slower runs were seen). Set before numpy loads;
# an explicit OPENBLAS_NUM_THREADS etc. in the environment still wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tinygan import backend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def data_root():
    """$TINYGAN_DATA, else ../shared/data beside the checkout when it exists, else None."""
    env = os.environ.get("TINYGAN_DATA")
    if env:
        return Path(env)
    default = REPO.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture
def data_dir():
    """Folder holding mnist/ and fashion-mnist-partial/; skips the test when absent."""
    root = data_root()
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("real data not found: set TINYGAN_DATA to the folder holding mnist/")
    return root


# The backend under test: TINYGAN_BACKEND's, else numpy (chosen here, on first use).
UNDER_TEST = backend.name()


@pytest.fixture(autouse=True)
def _seeded_backend():
    """Every test starts from the same generator state, on the backend under test.

    A test that runs a command or ``runner.run`` with ``--backend numpy`` (or a config
    saying so) switches the backend for good: without putting the backend under test
    back, every test after it would silently run on NumPy under ``TINYGAN_BACKEND=cupy``.
    It is put back after the test too, so that module-scoped fixtures built before the
    next test's setup (a trained classifier) live on the backend under test as well.
    """
    if backend.name() != UNDER_TEST:
        backend.use(UNDER_TEST)
    backend.seed(0)
    yield
    if backend.name() != UNDER_TEST:
        backend.use(UNDER_TEST)
