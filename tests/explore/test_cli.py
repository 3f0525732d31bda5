"""The explore and replay sub-commands: output and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmu_notifier.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "--list")
    assert code == 0
    for name in (
        "unregister-no-release",
        "get-put",
        "abba-deadlock",
        "lock-order-inversion",
        "sleep-under-spinlock",
    ):
        assert name in out


def test_a_found_bug_exits_1_with_schedule_and_replay_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "unregister-no-release", "--strategy", "pct", "--budget", "200")
    assert code == 1
    assert "BUG use-after-free" in out
    command = re.search(r"replay:\s+(mmu-notifier replay (mx2:builtin:unregister-no-release:\S+))", out)
    assert command is not None
    code, out, _ = run(capsys, "replay", command.group(2))  # the schedule alone names its scenario
    assert code == 1 and "use-after-free" in out
    code, out, _ = run(capsys, "replay", "unregister-no-release", command.group(2))
    assert code == 1 and "use-after-free" in out


def test_a_clean_exploration_exits_0_with_the_schedule_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "get-put", "--strategy", "dfs", "--preemptions", "1")
    assert code == 0
    assert "verdict: exhaustive to 1 preemption: clean" in out
    assert re.search(r"\d+ schedules, the search is exhausted", out)


def test_json_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    code, out, _ = run(capsys, "explore", "abba-deadlock", "--json", "--output", str(target))
    assert code == 1
    assert json.loads(out) == json.loads(target.read_text())  # --json prints; --output writes the same
    report = json.loads(target.read_text())
    assert report["findings"][0]["kind"] == "deadlock"
    assert report["findings"][0]["timeline"]["steps"]
    assert report["stats"]["schedules"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explore", "no-such"], "unknown scenario 'no-such'"),
        (["explore"], "name a scenario"),
        (["explore", "get-put", "--budget", "0"], "--budget must be at least 1"),
        (["explore", "get-put", "--strategy", "bfs"], "unknown strategy 'bfs'"),
        (["explore", "get-put", "--depth", "0"], "--depth must be at least 1"),
        (["explore", "get-put", "--preemptions", "-1"], "--preemptions must be at least 0"),
        (["explore", "get-put", "--time-budget", "0"], "--time-budget must be positive"),
        (["explore", "get-put", "--budget", "many"], "invalid int value"),
        (["replay", "get-put", "garbage"], "schedule format 'garbage' is not 'mx2'"),
        (["replay", "mx1:no-such:00000000:00000000:a"], "made by an older version (mx1)"),
        (["replay", "mx2:builtin:get-put:00000000:00000000"], "expected mx2:SOURCE:SCENARIO"),
        (["replay", "get-put", "mx1:get-put:00000000:00000000:a"], "changed since the schedule was recorded"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err
