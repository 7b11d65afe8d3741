"""``python -m learn2synth`` (and ``torchrun -m learn2synth``) runs the command line."""

import sys

from .cli import main

if __name__ == "__main__":  # not when imported (e.g. by pytest collecting doctests)
    sys.exit(main())
