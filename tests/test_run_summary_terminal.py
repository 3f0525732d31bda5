"""`mmu-notifier run` on a terminal and in a pipe: a summary table fitted to the width, progress with an ETA."""

from __future__ import annotations

import copy
import io
import re
import sys
from typing import Any

import pytest

from mmu_notifier.cli import main
from mmu_notifier.workload import runner, summary
from mmu_notifier.workload.cli import Progress, progress_enabled
from mmu_notifier.workload.default import DEFAULT

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LONG = ("[coherence] gntdev still translates 0x100000000 of mm 3 to frame 4, but the CPU page table maps nothing "
        "there: a stale translation (seen at quiescent point 12)")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal that takes colour, whatever the environment running the tests says."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    found = summary.document(runner.run_deterministic(DEFAULT, seed=0, record=False))
    found["drivers"]["gntdev"]["violations"] = [LONG]
    found["totals"]["violations"] = [LONG]
    return found


def _table(text: str) -> list[str]:
    """The lines of the driver table: from the titles to the total."""
    lines = ANSI.sub("", text).splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("driver"))
    last = next(i for i, line in enumerate(lines) if line.startswith("total"))
    return lines[first:last + 1]


@pytest.mark.parametrize("width", [80, 120])
def test_a_terminal_gets_a_coloured_table_that_fits_its_width(doc: dict[str, Any], width: int) -> None:
    text = summary.render(doc, width, colour=True, wrap=True)
    assert "\x1b[" in text
    plain = ANSI.sub("", text)
    assert max(len(line) for line in plain.splitlines()) <= width  # table, event lines and folded violations
    table = _table(text)
    titles = table[0].split()
    if width == 80:  # too narrow for the full titles: the short ones
        assert titles == ["driver", "alloc", "freed", "att", "det", "peak", "inval", "refus", "rel", "faults",
                          "retry", "viol"]
    else:
        assert "peak users" in table[0] and "invalidations" in table[0] and titles[-1] == "violations"
    rows = {line.split()[0]: line.split() for line in table[2:] if line.split() and line.split()[0].isidentifier()}
    assert set(rows) == {*doc["drivers"], "total"}
    assert rows["gntdev"][-1] == "1" and rows["total"][-1] == "1"  # the violation is counted under its driver
    assert "- gntdev: [coherence] gntdev still translates" in plain  # folded under its bullet, still there


def test_the_violation_count_is_red_only_where_there_are_violations(doc: dict[str, Any]) -> None:
    text = summary.render(doc, 120, colour=True, wrap=True)
    rows = {ANSI.sub("", line).split()[0]: line for line in text.splitlines() if line.startswith("\x1b[1m")}
    assert "\x1b[1;31m" in rows["gntdev"] and "\x1b[1;31m" not in rows["gru"]


def test_piped_output_is_plain_fits_80_and_keeps_each_violation_on_one_line(doc: dict[str, Any]) -> None:
    text = summary.render(doc, 80)
    assert "\x1b[" not in text
    assert max(len(line) for line in _table(text)) <= 80
    assert f"  - gntdev: {LONG}" in text.splitlines()  # one line, for grep


def test_without_a_width_the_table_keeps_its_full_titles(doc: dict[str, Any]) -> None:
    header = _table(summary.render(doc))[0]
    assert "peak users" in header and "dev faults" in header


def test_huge_counts_are_abbreviated_when_nothing_else_fits(doc: dict[str, Any]) -> None:
    big = copy.deepcopy(doc)
    for stats in [*big["drivers"].values(), big["totals"]]:
        stats.update(allocated=1_234_567, freed=1_234_567, attaches=2_345_678, detaches=2_345_678,
                     device_faults=12_345_678, retries=98_765, invalidations={"CLEAR": 123_456_789})
    table = _table(summary.render(big, 80))
    assert max(len(line) for line in table) <= 80
    assert table[2].split()[1:4] == ["1.2M", "1.2M", "2.3M"] and "123M" in table[2] and "98.8k" in table[2]
    assert "12345678" in summary.render(big, 200)  # exact where there is room


def test_the_cli_honours_no_color_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for no_color, coloured in ((None, True), ("1", False)):
        if no_color is None:
            monkeypatch.delenv("NO_COLOR", raising=False)
        else:
            monkeypatch.setenv("NO_COLOR", no_color)
        terminal = FakeTerminal()
        monkeypatch.setattr(sys, "stdout", terminal)
        assert main(["run", "--driver", "gru"]) == 0
        text = terminal.getvalue()
        assert ("\x1b[" in text) is coloured
        assert max(len(line) for line in _table(text)) <= 80


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_shows_done_total_and_an_eta_then_how_long_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    clock, stream = Clock(), FakeTerminal()
    bar = Progress(100, enabled=True, stream=stream, clock=clock)
    bar(10)
    assert stream.getvalue() == ""  # nothing during the first second
    clock.now += 2.0
    bar(20)  # 20 steps in 2 s: 80 left take 8 s
    assert "20/100 steps" in stream.getvalue() and "ETA 8s" in stream.getvalue()
    clock.now += 2.0
    bar(140)  # past the estimate: the total grows with it, the bar never overflows
    assert "140/140 steps" in stream.getvalue()
    bar.close()
    last = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert "140/140 steps" in last and "in 4s" in last and stream.getvalue().endswith("\n")
    assert all(len(ANSI.sub("", part)) <= 80 for part in stream.getvalue().split("\r"))


def test_progress_is_silent_when_piped_or_with_json() -> None:
    clock, stream = Clock(), io.StringIO()
    assert not progress_enabled(stream, as_json=False)
    assert not progress_enabled(FakeTerminal(), as_json=True)
    assert progress_enabled(FakeTerminal(), as_json=False)
    bar = Progress(10, enabled=False, stream=stream, clock=clock)
    clock.now += 5
    bar(5)
    bar.close()
    assert stream.getvalue() == ""


def test_a_long_run_over_a_pipe_prints_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--driver", "gru"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "ETA" not in err


@pytest.mark.parametrize("colour", [False, True])
def test_a_very_narrow_terminal_gets_the_table_in_parts_each_with_the_driver_column(doc: dict[str, Any],
                                                                                    colour: bool) -> None:
    text = ANSI.sub("", summary.render(doc, 50, colour=colour, wrap=True))
    lines = text.splitlines()
    headers = [line.split() for line in lines if line.startswith("driver")]
    assert len(headers) >= 2 and all(header[0] == "driver" for header in headers)
    assert [title for header in headers for title in header[1:]] == ["alloc", "freed", "att", "det", "peak", "inval",
                                                                     "refus", "rel", "faults", "retry", "viol"]
    assert max(len(line) for line in lines) <= 50
    totals = [line.split() for line in lines if line.startswith("total ")]
    assert len(totals) == len(headers) and totals[-1][-1] == "1"
