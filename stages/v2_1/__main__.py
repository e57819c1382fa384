import sys

from stages.v2_1.cli import main

sys.exit(main())
