"""Reports a kernel developer trusts: KASAN-grade findings, step numbers that agree, replay from the string alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmu_notifier.cli import main
from mmu_notifier.explore import Execution, Kind, RandomWalk, Schedule, explore
from mmu_notifier.explore._explorer import schedule_of
from mmu_notifier.scenarios import conformance_scenario, get, resolve


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def uaf() -> object:
    return explore(get("unregister-no-release"), reproduce=1).bugs[0]


def test_a_use_after_free_names_access_allocation_and_free_each_with_thread_step_and_stack(uaf: object) -> None:
    details = uaf.problem.details  # type: ignore[attr-defined]
    assert uaf.problem.kind is Kind.USE_AFTER_FREE  # type: ignore[attr-defined]
    assert re.fullmatch(r"thread B at step \d+: mmu_notifier/notifier\.py:\d+ in _\w+", details["access"])
    assert " <- " in details["stack"]
    allocated = details["allocated by"]
    assert re.fullmatch(r"thread A at step \d+: mmu_notifier/scenarios/notifier\.py:\d+ in \w+", allocated)
    assert "in create_process" in details["allocated by stack"]
    assert re.fullmatch(r"thread A at step \d+: mmu_notifier/scenarios/notifier\.py:\d+ in create_process",
                        details["freed by"])
    keys = list(details)
    assert keys.index("access") < keys.index("allocated by") < keys.index("freed by")  # KASAN's order


def test_the_timeline_marks_the_allocation_and_the_free_at_their_steps(uaf: object) -> None:
    timeline = uaf.timeline  # type: ignore[attr-defined]
    details = uaf.problem.details  # type: ignore[attr-defined]
    freed_at = int(re.search(r"step (\d+)", details["freed by"]).group(1))  # type: ignore[union-attr]
    frees = [m for m in timeline.marks if m.what == "kfree"]
    assert [(m.step, m.thread, m.label) for m in frees] == [(freed_at, "A", "KFDProcess")]
    assert any(m.what == "kmalloc" and m.label == "KFDProcess" for m in timeline.marks)
    text = timeline.text()
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if re.match(rf"\s*{freed_at}\s", line))
    assert lines[row + 1].strip() == "- kfree KFDProcess"  # right under the step it happened in
    svg = timeline.svg("race")
    assert 'class="mark free"' in svg and 'class="mark alloc"' in svg and "kfree KFDProcess" in svg


def test_step_numbers_agree_between_the_report_the_timeline_and_the_replay(uaf: object) -> None:
    problem = uaf.problem  # type: ignore[attr-defined]
    timeline = uaf.timeline  # type: ignore[attr-defined]
    assert problem.step == timeline.steps[-1].index  # the failing step is the timeline's last
    assert "!!" in timeline.text() and f"at step {problem.step}:" in timeline.text()
    schedule = uaf.minimised or uaf.schedule  # type: ignore[attr-defined]
    assert len(Schedule.parse(schedule).steps) == len(timeline.steps)


def test_the_header_says_why_the_search_stopped() -> None:
    result = explore(get("abba-deadlock"), minimise_budget=0, reproduce=0)
    assert result.stopped == "first finding"
    head, why = result.text().splitlines()[:2]
    assert re.match(r"explored abba-deadlock with portfolio .*: 1 bug\(s\) found after", head)
    assert why == f"  stopped at the first finding after {result.stats.schedules} schedules"


def test_end_of_run_check_findings_sit_at_the_last_step() -> None:
    bug = explore(get("radeon-5.4-register-failure-leak", plugins=True), minimise_budget=0, reproduce=0).bugs[0]
    assert bug.problem.step == bug.timeline.steps[-1].index
    assert bug.problem.details["when"] == "end-of-run check, after the last step"


def test_the_minimiser_reports_before_and_after() -> None:
    bug = explore(get("unregister-no-release"), "random", budget=100, seed=0, reproduce=0).bugs[0]
    assert bug.preemptions > bug.minimised_preemptions == 2
    assert bug.minimiser == (
        f"shrunk from {bug.preemptions} preemptions, {bug.steps} steps to 2 preemptions, "
        f"{bug.minimised_steps} steps in {bug.minimiser.split(' in ')[1].split()[0]} runs "  # type: ignore[union-attr]
        "(fewest possible: every bound below 2 searched to its end)"
    )


def test_the_minimiser_says_when_it_could_not_shrink() -> None:
    bug = explore(get("abba-deadlock"), "dfs", reproduce=0).bugs[0]  # the DFS finds a 1-preemption deadlock
    assert bug.minimiser is not None and bug.minimiser.startswith("could not shrink 1 preemption, ")
    assert "fewest possible" in bug.minimiser


def test_replay_needs_only_the_schedule_for_plugin_and_conformance_scenarios(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bug = explore(get("hmm-legacy-unfixed-exit", plugins=True), minimise_budget=0, reproduce=0).bugs[0]
    assert bug.schedule.startswith("mx2:plugin:hmm-legacy-unfixed-exit:")
    code, out, _ = run(capsys, "replay", bug.schedule)
    assert code == 1 and "use-after-free" in out
    race = conformance_scenario("conformance.gntdev.exit-vs-detach")
    schedule = schedule_of(race, Execution(race, RandomWalk(3)).run())
    assert schedule.startswith("mx2:conformance:conformance.gntdev.exit-vs-detach:")
    assert resolve(schedule).name == race.name
    code, out, _ = run(capsys, "replay", schedule)
    assert code == 0 and "no problem" in out


def test_an_old_schedule_replays_by_its_name_or_asks_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    old = "mx1:unregister-no-release:09d28813:91a731f1:b2a6b2a4b2"
    code, out, _ = run(capsys, "replay", old)  # a built-in name is still found
    assert code == 1 and "use-after-free" in out
    code, _, err = run(capsys, "replay", "mx1:my-own:09d28813:91a731f1:b2a6b2a4b2")
    assert code == 2 and "made by an older version (mx1)" in err and "give the scenario name" in err


SCENARIO_FILE = '''
from mmu_notifier import sync
from mmu_notifier.explore import Scenario, ScenarioInstance


def _build():
    lock_a, lock_b = sync.Mutex("file_a"), sync.Mutex("file_b")
    run = ScenarioInstance()

    def nested(first, second):
        with first:
            with second:
                pass

    run.thread("T1")(lambda: nested(lock_a, lock_b))
    run.thread("T2")(lambda: nested(lock_b, lock_a))
    return run


MINE = Scenario("my-abba", _build, "ABBA written in a file", "deadlock")
'''


def test_a_scenario_in_a_file_explores_and_replays_from_its_schedule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "my scenarios.py"
    path.write_text(SCENARIO_FILE)
    code, out, _ = run(capsys, "explore", f"{path}:my-abba")
    assert code == 1 and "BUG deadlock" in out
    schedule = re.search(r"replay:\s+mmu-notifier replay (mx2:file=\S+)", out).group(1)  # type: ignore[union-attr]
    assert "%20" in schedule  # the space is encoded: the string stays one shell word
    assert Schedule.parse(schedule).file == str(path)
    code, out, _ = run(capsys, "replay", schedule)
    assert code == 1 and "deadlock" in out
    code, _, err = run(capsys, "explore", f"{path}:nope")
    assert code == 2 and "defines no scenario named 'nope' (it defines: my-abba)" in err


def test_replay_step_prints_every_threads_state_before_each_step(capsys: pytest.CaptureFixture[str]) -> None:
    schedule = explore(get("abba-deadlock"), reproduce=0).bugs[0].minimised
    code, out, _ = run(capsys, "replay", "--step", schedule)  # type: ignore[arg-type]
    assert code == 1
    steps = re.findall(r"^step (\d+): (T\d) ", out, re.M)
    assert [int(i) for i, _ in steps] == list(range(len(Schedule.parse(schedule).steps)))  # type: ignore[arg-type]
    assert re.search(r"^  > T\d +runnable +mutex_lock mutex lock_\w", out, re.M)
    assert re.search(r"holds mutex lock_a", out)


def test_log_events_carry_thread_and_step_matching_the_timeline() -> None:
    import io
    import json

    from mmu_notifier import log
    from mmu_notifier.scenarios import replay

    stream = io.StringIO()
    log.configure("json", stream)
    try:
        replayed = replay("get-put", "mx1:get-put:71985835:2ca62b66:ab2a8b2abcbcbd2")
    finally:
        log.configure(None)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    steps = replayed.timeline.steps
    timed = [r for r in records if "step" in r]
    assert timed and all(steps[r["step"]].thread == r["thread"] for r in timed)  # the lane of its step
    assert any(r["event"] == "notifier.put" and r["thread"] == "A" for r in records)
