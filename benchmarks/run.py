"""Performance benchmark of HookedCLIP and LAKE against bare open_clip (see lake_interp/perf.py).

    python benchmarks/run.py [--quick] [--model ViT-B-16] [--batch 8] [--repeats 5]
                             [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--json OUT]

Prints the machine, a table (with the speed targets and whether they are met) and writes JSON.
The same benchmark is `lake-interp bench`.
"""

import sys

from lake_interp.perf import main

if __name__ == "__main__":
    sys.exit(main())
