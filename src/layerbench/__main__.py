import signal
import sys

from layerbench.cli import main

# SIGTERM (scancel, a time limit) unwinds like an error: atomic writes remove their scratch copies
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
sys.exit(main())
