"""``python -m jupyter_trainorch.cli``."""

import sys

from . import main

sys.exit(main())
