"""The explore and replay sub-commands: output and exit codes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mmu_notifier.cli import main
from mmu_notifier.explore import Scenario, ScenarioInstance
from mmu_notifier.scenarios import BUILTIN


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
    command = re.search(r"replay:\s+(mmu-notifier replay \S+ (mx1:\S+))", out)
    assert command is not None
    code, out, _ = run(capsys, "replay", "unregister-no-release", command.group(2))
    assert code == 1 and "use-after-free" in out


def test_a_clean_exploration_exits_0_with_the_schedule_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "get-put", "--strategy", "dfs", "--preemptions", "1")
    assert code == 0
    assert re.search(r"no problem found in \d+ schedules", out)


def test_json_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    code, _, _ = run(capsys, "explore", "abba-deadlock", "--json", str(target))
    assert code == 1
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
        (["explore", "get-put", "--all"], "--all runs every scenario"),
        (["explore", "get-put", "--budget", "many"], "invalid int value"),
        (["replay", "get-put", "garbage"], "expected mx1:SCENARIO"),
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


def test_dpor_proves_get_put_clean_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "get-put", "--strategy", "dpor")
    assert code == 0
    first = out.splitlines()[0]
    match = re.search(r"unbounded\): all (\d+) traces explored: clean$", first)
    assert match is not None and int(match.group(1)) < 52


def test_dpor_with_a_preemption_bound_says_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "get-put", "--strategy", "dpor", "--preemptions", "0")
    assert code == 0
    assert "preemption bound 0): bounded: all" in out.splitlines()[0]


def test_dpor_out_of_budget_says_not_complete(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explore", "get-put", "--strategy", "dpor", "--budget", "3")
    assert code == 0
    assert out.splitlines()[0].endswith("budget spent after 3 traces: not complete")


def _only(monkeypatch: pytest.MonkeyPatch, extra: Scenario | None = None, names: tuple[str, ...] = ()) -> None:
    from mmu_notifier.scenarios import BUILTIN
    from mmu_notifier.scenarios import cli as explore_cli

    chosen = {s.name: s for s in BUILTIN if not names or s.name in names}
    if extra is not None:
        chosen[extra.name] = extra
    monkeypatch.setattr(explore_cli, "scenarios", lambda plugins=False: dict(chosen))


def test_all_checks_every_scenario_against_its_declared_outcome(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _only(monkeypatch)
    code, out, _ = run(capsys, "explore", "--all", "--strategy", "dpor")
    assert code == 0
    lines = out.splitlines()
    total = len(BUILTIN)  # the built-ins only (_only leaves the plugins out)
    assert lines[-1] == f"{total}/{total} scenarios show their declared outcome"
    get_put = next(line for line in lines if line.startswith("get-put "))
    assert " dpor " in get_put and " ok " in get_put and "traces explored: clean" in get_put
    for name in ("unregister-no-release", "abba-deadlock", "lock-order-inversion", "sleep-under-spinlock"):
        assert " ok " in next(line for line in lines if line.startswith(f"{name} "))


def test_all_fails_on_a_mismatch(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def build() -> ScenarioInstance:
        run = ScenarioInstance()
        run.thread("A")(lambda: None)
        return run

    _only(monkeypatch, Scenario("claims-a-deadlock", build, "clean, but declares a deadlock", "deadlock"))
    code, out, _ = run(capsys, "explore", "--all", "--strategy", "dpor")
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("claims-a-deadlock"))
    assert "MISMATCH" in line
    total = len(BUILTIN) + 1
    assert out.splitlines()[-1] == f"{total - 1}/{total} scenarios show their declared outcome"


def test_all_reports_a_clean_scenario_out_of_budget_as_not_complete(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _only(monkeypatch, names=("get-put",))
    code, out, _ = run(capsys, "explore", "--all", "--strategy", "dpor", "--budget", "3")
    get_put = next(line for line in out.splitlines() if line.startswith("get-put "))
    assert "ok, not complete" in get_put and "budget spent after 3 traces: not complete" in get_put
    assert code == 0
