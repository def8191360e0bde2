"""`python -m fused_lif`: the `fused-lif` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
