"""``python -m tinygan`` runs the same command line as ``tinygan``."""

import sys

from tinygan.cli import main

sys.exit(main())
