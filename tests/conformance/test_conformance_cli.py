"""``mmu-notifier conformance`` / ``python -m mmu_notifier.conformance``: arguments and exit codes."""

from __future__ import annotations

import argparse
import subprocess
import sys

from mmu_notifier.conformance import CHECKS
from mmu_notifier.conformance.cli import PLUGIN, add_commands, plugin_autoloaded, pytest_args
from mmu_notifier.conformance.plugin import KIT_DIR


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmu-notifier")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_conformance_command_builds_the_pytest_command_line() -> None:
    args = parse("conformance", "gntdev", "hmm", "-k", "coherence", "-x", "--budget", "50", "--examples", "3", "-v")
    assert args.command == "conformance" and callable(args.func)
    argv = pytest_args(args)
    assert argv[:2] == ["--pyargs", "mmu_notifier.conformance"]
    assert argv.count("--mmu-driver") == 2 and "gntdev" in argv and "hmm" in argv
    assert argv[argv.index("-k") : argv.index("-k") + 2] == ["-k", "coherence"]
    assert "-x" in argv and "-v" in argv
    assert argv[argv.index("--mmu-budget") + 1] == "50" and argv[argv.index("--mmu-examples") + 1] == "3"
    assert ("-p" in argv and PLUGIN in argv) == (not plugin_autoloaded())
    assert "--mmu-steps" not in argv  # unset options keep the kit's defaults


def test_conformance_command_exit_code_is_pytests() -> None:
    ok = subprocess.run([sys.executable, "-m", "mmu_notifier.conformance", "--help"], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0 and "--budget" in ok.stdout
    # a driver that is not installed is a usage error (issue 16): exit 2, one line, before pytest starts
    missing = subprocess.run(
        [sys.executable, "-m", "mmu_notifier.conformance", "no-such-driver", "-k", "test_driver_loads", "-q"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "no-such-driver" in missing.stderr and missing.stderr.count("\n") == 1 and missing.stdout == ""
    # otherwise the exit code is pytest's: 5 when the -k expression selects no check
    none = subprocess.run(
        [sys.executable, "-m", "mmu_notifier.conformance", "-k", "no_such_check_anywhere", "-q"],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert none.returncode == 5, none.stdout + none.stderr


def test_every_check_is_documented() -> None:
    """Each test of the kit has a line in CHECKS (and so in the plugin guide's table)."""
    import ast

    tests = set()
    for module in KIT_DIR.glob("check_*.py"):
        tree = ast.parse(module.read_text())
        functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
        tests |= {name for name in functions if name.startswith("test_")}
    assert tests == set(CHECKS)
