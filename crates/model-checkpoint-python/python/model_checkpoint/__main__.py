"""``python -m model_checkpoint``: the ``ckpt`` console script, for an environment whose
scripts folder is not on ``PATH``."""

import sys

from ._cli import main

# What the command line names itself in its usage and errors.
sys.argv[0] = "ckpt"
sys.exit(main())
