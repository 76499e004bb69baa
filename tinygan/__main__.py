"""``python -m tinygan`` and the ``tinygan`` command: the command line of ``tinygan.cli``.

The import itself (NumPy, Matplotlib) takes a moment; Ctrl-C during it ends the program
with the same one line as Ctrl-C later, not a traceback from inside an import."""

import sys


def run():
    try:
        from tinygan.cli import main
    except KeyboardInterrupt:
        print("tinygan: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
