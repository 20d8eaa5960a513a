"""``python -m zsexp.cli``: the same entry point as the ``zsexp`` script."""

import sys

from zsexp.cli import main

sys.exit(main())
