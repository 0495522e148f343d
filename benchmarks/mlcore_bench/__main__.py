"""``python -m mlcore_bench [options]`` is ``mlcore bench [options]``."""

import sys

from mlcore.cli import main

main(["bench", *sys.argv[1:]], prog_name="python -m mlcore_bench")
