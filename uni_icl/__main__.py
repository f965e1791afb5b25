"""Entry point of ``python -m uni_icl``."""

import sys

from uni_icl.cli import main

sys.exit(main())
