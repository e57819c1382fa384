"""``python -m stages.v2_1 ...``: the stage's command line (:mod:`stages.v2_1.cli`)."""

import sys

from stages.v2_1.cli import main

if __name__ == "__main__":
    sys.exit(main())
