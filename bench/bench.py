"""The benchmark table (see blasgpt/bench.py): python bench/bench.py [--quick] [--json FILE] [--only d16|d64]."""

import sys

from blasgpt.bench import main

if __name__ == "__main__":
    sys.exit(main())
