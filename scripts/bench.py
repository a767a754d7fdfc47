"""`make bench`: in2n against the original implementation's way of editing, on the CPU or on CUDA.

The benchmark is the package bench/ at the repository root (method and numbers: bench/README.md); options:
`python scripts/bench.py --help`.
"""

import sys
from pathlib import Path

# bench/ is not installed with in2n. Python puts this script's folder first on the path, where this file would be
# found as `bench`, so the repository root goes before it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
