"""``python -m mmu_notifier.explore explore|replay ...``."""

import sys

from mmu_notifier.explore.cli import main

sys.exit(main())
