"""``python -m inversion.cli``: see :mod:`inversion.cli`."""
import sys

from inversion.cli.command import main

sys.exit(main())
