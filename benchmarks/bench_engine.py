"""Speed and memory of rnnlab vs torch.nn: a thin wrapper over ``rnnlab bench``.

    python benchmarks/bench_engine.py [--quick] [--json FILE] [--engine NAME]
"""

import sys

from rnnlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
