"""``python -m stages.v1_0 ...``: the stage's command line (:mod:`stages.v1_0.cli`)."""

import sys

from stages.v1_0.cli import main

if __name__ == "__main__":
    sys.exit(main())
