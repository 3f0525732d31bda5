"""Terminal and CLI: headed tables, plain when piped, NO_COLOR, a closed pipe, examples in every --help."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from mmu_notifier.cli import build_parser, main
from mmu_notifier.cli_common import table


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_piped_table_has_a_header_and_keeps_long_names_in_their_column() -> None:
    text = table(("name", "kind"), [("a-very-long-scenario-name-indeed", "x"), ("b", "use-after-free")],
                 io.StringIO())
    header, rule, first, second = text.splitlines()
    assert header.split() == ["name", "kind"] and set(rule.replace(" ", "")) == {"-"}
    assert first.index("x") == second.index("use-after-free") == header.index("kind")
    assert "\x1b[" not in text  # no colour in a pipe


def test_a_terminal_gets_colour_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "60")
    coloured = table(("name", "kind"), [("x" * 80, "y")], FakeTerminal())
    assert "\x1b[" in coloured and "name" in coloured
    plain = re.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert max(len(line) for line in plain.splitlines()) <= 60  # fitted to the terminal's width: the long cell wraps
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in table(("name", "kind"), [("x", "y")], FakeTerminal())


def test_drivers_and_explore_list_print_headers(capsys: pytest.CaptureFixture[str]) -> None:
    main(["drivers"])
    assert capsys.readouterr().out.splitlines()[0].split() == ["driver", "version", "distribution", "config",
                                                                "capabilities"]
    assert main(["explore", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["scenario", "source", "expected"]
    assert any(line.split()[:3] == ["unregister-no-release", "builtin", "use-after-free"] for line in out)


@pytest.mark.parametrize("argv", [["drivers", "--json"], ["explore", "--list"]])
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mmu_notifier.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written, as with | head
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 0


def test_every_command_help_has_examples() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        text = command.format_help()
        assert "examples:" in text and f"mmu-notifier {name}" in text, name
