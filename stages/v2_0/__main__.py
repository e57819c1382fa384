import sys

from stages.v2_0.cli import main

sys.exit(main())
