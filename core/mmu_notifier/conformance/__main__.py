"""``python -m mmu_notifier.conformance [NAME...]``: the same as ``mmu-notifier conformance``."""

from __future__ import annotations

import sys

from mmu_notifier.cli import main

if __name__ == "__main__":
    sys.exit(main(["conformance", *sys.argv[1:]]))
