"""Start-up cost (issue 18, target 4): a command line builds and imports only what it runs.

``mmu-notifier explore`` of a built-in scenario never needs pydantic (driver
configs), ``importlib.metadata`` (entry points), the main job or the DPOR
module; the CLI builds the parser of the named sub-command's module only, and
the table saying which module adds which sub-command must match what the
modules add.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from mmu_notifier import cli
from mmu_notifier.config import DriverConfig
from mmu_notifier.plugins import Driver


def _added(add_commands: object) -> set[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_commands(sub)  # type: ignore[operator]
    return set(sub.choices)


def test_command_names_match_what_each_module_adds() -> None:
    for add_commands in cli.COMMANDS:
        named = {name for name, adder in cli.COMMAND_NAMES.items() if adder is add_commands}
        assert named == _added(add_commands)


def test_a_named_command_builds_only_its_module_parser() -> None:
    parser = cli.build_parser("explore")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"drivers", "explore", "replay"}
    args = parser.parse_args(["explore", "get-put", "--strategy", "dfs"])
    assert (args.scenario, args.strategy) == ("get-put", "dfs")
    full = cli.build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"drivers", *cli.COMMAND_NAMES}


_PROBE = """
import io, sys
from mmu_notifier.cli import main
out, sys.stdout = sys.stdout, io.StringIO()
code = main(["explore", "unregister-no-release", "--strategy", "dfs"])
report, sys.stdout = sys.stdout.getvalue(), out
heavy = ("pydantic", "yaml", "structlog", "importlib.metadata", "mmu_notifier.config",
         "mmu_notifier.workload", "mmu_notifier.explore._dpor")
print(code, "BUG use-after-free" in report, [name for name in heavy if name in sys.modules])
"""


def test_explore_of_a_builtin_scenario_imports_nothing_heavy() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.split(maxsplit=2) == ["1", "True", "[]\n"] or done.stdout.strip() == "1 True []"


def test_driver_default_config_is_made_on_first_read() -> None:
    class Plain(Driver):
        name = "plain"

    assert Driver.config_model is DriverConfig
    driver = Plain()
    assert "config" not in vars(driver)
    assert isinstance(driver.config, DriverConfig)
    assert driver.config is driver.config  # made once
    given = DriverConfig()
    assert Plain(given).config is given
