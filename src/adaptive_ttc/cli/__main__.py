"""``python -m adaptive_ttc.cli``."""

import sys

from adaptive_ttc.cli import main

sys.exit(main())
