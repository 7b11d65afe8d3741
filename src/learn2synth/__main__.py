"""``python -m learn2synth`` (and ``torchrun -m learn2synth``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
