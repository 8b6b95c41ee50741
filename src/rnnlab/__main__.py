"""``python -m rnnlab ...``: the ``rnnlab`` command."""

import sys

from rnnlab.cli.main import main

if __name__ == "__main__":   # not when a tool walks the package and imports every module
    sys.exit(main())
