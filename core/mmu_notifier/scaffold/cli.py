"""The ``new-plugin`` sub-command: ``mmu-notifier new-plugin NAME [--dir PATH]``.

Exit 0 with the files written and the next steps; 2 with one line for a bad
name or an existing directory (nothing is written then).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmu_notifier.scaffold import new_plugin


def add_commands(subparsers: Any) -> None:
    """Add ``new-plugin`` to the ``mmu-notifier`` sub-commands."""
    parser = subparsers.add_parser(
        "new-plugin",
        help="write a new driver plugin in the common shape (passes the conformance kit as generated)",
        description="Write a driver plugin NAME: pyproject with the entry point, config with a scheme switch, "
        "the per-mm object, a device, an exerciser, an explorer scenario, tests and README.",
        epilog="examples:\n  mmu-notifier new-plugin my_gpu\n"
        "  mmu-notifier new-plugin my_gpu --dir ../mmu-notifier-my-gpu\n"
        "  pip install -e ./mmu-notifier-my_gpu && mmu-notifier conformance my_gpu",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help="the driver name (lower case, e.g. my_gpu)")
    parser.add_argument("--dir", type=Path, metavar="PATH",
                        help="directory to create (must not exist; default ./mmu-notifier-NAME)")
    parser.set_defaults(func=cmd_new_plugin)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    """Write the plugin and say what to do next."""
    target, written = new_plugin(args.name, args.dir)
    print(f"wrote the driver plugin {args.name!r} in {target}:")
    for path in written:
        print(f"  {path.relative_to(target)}")
    print("next:")
    print(f"  pip install -e {target}")
    print(f"  mmu-notifier conformance {args.name}      # the kit passes as generated")
    print(f"  pytest {target / 'tests'}")
    return 0
