"""The benchmark tables (see blasgpt/bench.py): python bench/bench.py [--quick] [--json FILE] [--only PART] [--mpi]."""

import sys

from blasgpt.bench import main

if __name__ == "__main__":
    sys.exit(main())
