"""`python -m bench [--quick] [--only ingest,cloud]`: every benchmark, one table (bench/runner.py)."""

import sys

from bench.runner import main

sys.exit(main())
