"""``python -m notmiwae_fast.bench --child SPEC``: the child process that measures the
peak memory of one case on the CPU (:func:`notmiwae_fast.bench.memory.child_peak_mb`)."""

import sys

from .memory import _child_main

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        sys.exit("usage: notmiwae-fast bench ... (this module's own entry point is internal)")
