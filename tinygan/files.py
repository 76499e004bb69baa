"""Writing output files whole or not at all.

A file written in place and interrupted (a full disk, a size limit, Ctrl-C) is left
half-written, and a half-written metrics.json or checkpoint replaces a good one. So every
output is written to a temporary file in the same folder and renamed over its target:
``os.replace`` within one file system is atomic, and readers see the old file or the
new one, never a mix.
"""

import os
import tempfile
from contextlib import contextmanager


def default_mode():
    """The mode open() gives a new file: 0o666 less the umask (mkstemp's files are 0o600,
    which would hide checkpoints and cached downloads from the other users of a folder)."""
    umask = os.umask(0)  # the only way to read it is to set it: put it straight back
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def written_atomically(path):
    """Yield a temporary path beside ``path`` to write; on success it becomes ``path``.

    The folder is created if needed. On any error the temporary file is removed and
    ``path`` keeps its old content.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    except OSError as err:  # name the file asked for, not the temporary one
        raise OSError(f"cannot write {path}: {err.strerror or err}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def first_line(err):
    """An error's message cut to its first line (its type's name when it has none), for
    errors quoted inside a one-line message of ours. A KeyError's message is its key, unquoted."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def check_output_file(path, extension, what="--out"):
    """A one-line ValueError unless ``path`` names a file with this extension (and a name
    before it: "d/.png" is a hidden file with no extension), not a folder."""
    if os.path.splitext(os.path.basename(path))[1] != extension or os.path.isdir(path):
        raise ValueError(f"{what} {path}: expected the path of a {extension} file to write")


def check_writable(folder, what):
    """Make sure ``folder`` can be written (created, when it does not exist yet) before
    hours of work whose results would be lost; a one-line OSError naming ``what`` otherwise.

    Nothing is created here: a command that fails afterwards leaves no empty folders
    behind. The test file goes into the nearest folder that exists, which is where the
    missing ones will be made (``written_atomically`` makes them with the first file)."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(folder) else f": {existing}"
        raise OSError(f"{what} {folder}{where} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OSError(f"{what} {folder}: not writable ({err.strerror or err})") from None
