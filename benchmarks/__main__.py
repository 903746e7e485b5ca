"""``python -m benchmarks``: tunes glibc's allocator (unless ``--malloc default``), then runs the bench.

The allocator must be tuned before the first large allocation: before torch is imported.
"""

import sys

from maml_cli.performance import tune_allocator  # imports nothing heavy


def malloc_setting(argv: list[str]) -> str:
    """The ``--malloc`` value in ``argv`` ("tuned" when absent), read before argparse runs."""
    for i, arg in enumerate(argv):
        if arg == "--malloc" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--malloc="):
            return arg.split("=", 1)[1]
    return "tuned"


if malloc_setting(sys.argv) == "tuned":
    tune_allocator()

from benchmarks.cli import main  # noqa: E402  (imports torch)

sys.exit(main())
