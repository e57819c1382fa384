import sys

from stages.v1_0.cli import main

sys.exit(main())
