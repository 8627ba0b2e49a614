"""`python -m glassvit ...` (also what `torchrun -m glassvit train ...` runs)."""

import sys

from .cli import main

sys.exit(main())
