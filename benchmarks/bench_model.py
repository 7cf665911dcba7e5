"""Speed and memory of a preset as ratios measured in one run; same as ``ca2st bench``.

python benchmarks/bench_model.py --model cast_b16 --batch 1 --json results.json
"""

import sys

from ca2st.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
