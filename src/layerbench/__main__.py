import sys

from layerbench.cli import main

sys.exit(main())
