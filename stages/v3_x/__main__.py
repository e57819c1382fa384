"""``python -m stages.v3_x ...``: the stage's command line (:mod:`stages.v3_x.cli`)."""

import sys

from stages.v3_x.cli import main

if __name__ == "__main__":
    sys.exit(main())
