"""``explore --jobs N`` and the Dask runner: a split search reports exactly what one job reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmu_notifier.cli import main
from mmu_notifier.errors import UsageError
from mmu_notifier.explore import Exploration, Scenario, ScenarioInstance, explore, explore_sharded
from mmu_notifier.explore._shards import SEED_STREAMS, stream_seed
from mmu_notifier.scenarios import explore_parallel, get, load_file, register, unregister
from mmu_notifier.scenarios._parallel import ScenarioRef

LOST_UPDATE = '''
from mmu_notifier import sync
from mmu_notifier.explore import Scenario, ScenarioInstance, Violation


def build() -> ScenarioInstance:
    cell = [0]
    run = ScenarioInstance()

    def inc() -> None:
        value = cell[0]
        sync.yield_now()
        cell[0] = value + 1

    run.thread("A")(inc)
    run.thread("B")(inc)

    @run.check
    def both() -> None:
        if cell[0] != 2:
            raise Violation(f"lost update: {cell[0]}")

    return run


SCENARIO = Scenario("lost-update", build, "two increments without a lock", expect="invariant")
'''


def comparable(result: Exploration) -> dict[str, Any]:
    """The report without what depends on the clock: findings, counts, verdict, coverage, strategy."""
    doc = result.to_json()
    for timing in ("elapsed_s", "schedules_per_s", "steps_per_s"):
        doc["stats"].pop(timing)
    return doc


@pytest.mark.parametrize(
    ("name", "strategy", "options"),
    [
        ("get-put", "dfs", {}),  # a clean proof: exhaustive to 2 preemptions
        ("unregister-no-release", "portfolio", {}),  # a found bug (DPOR's phase), minimised
        ("unregister-no-release", "random", {"budget": 300}),  # a bug found in a seed stream
        ("interval-remove-race", "dfs", {"preemptions": 3}),  # a bug deep in a DFS split by prefix
        ("abba-deadlock", "pct", {"depth": 3, "keep_going": True, "budget": 200}),  # every finding, not the first
        ("get-put", "portfolio", {"budget": 400}),  # every phase: dpor, dfs bounds, pct streams, random streams
    ],
)
def test_two_jobs_report_what_one_job_reports(name: str, strategy: str, options: dict[str, Any]) -> None:
    keep_going = options.pop("keep_going", False)
    one = explore_parallel(get(name), strategy, jobs=1, stop_on_first=not keep_going, **options)
    two = explore_parallel(get(name), strategy, jobs=2, stop_on_first=not keep_going, **options)
    assert comparable(two) == comparable(one)
    assert two.text().splitlines()[0] == one.text().splitlines()[0]  # the verdict line, word for word
    if one.findings:
        assert [f.minimised for f in two.findings] == [f.minimised for f in one.findings]
        assert two.findings[0].replay == one.findings[0].replay


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("get-put", {"strategy": "dfs", "preemptions": 3}),
        ("unregister-no-release", {"strategy": "dfs"}),
        ("abba-deadlock", {"strategy": "dfs"}),
        ("get-put", {"strategy": "exhaustive", "budget": 500}),  # cut by the budget inside the shards
        ("get-put", {"strategy": "dpor"}),
        ("get-put", {"strategy": "dfs", "preemptions": 4, "budget": 700}),
    ],
)
def test_split_by_prefix_is_exactly_the_single_search(name: str, options: dict[str, Any]) -> None:
    """DFS, exhaustive and DPOR keep the engine's own counts, findings and verdict (the split is exact)."""
    single = explore(get(name), **options)
    split = explore_parallel(get(name), jobs=2, **options)
    assert comparable(split) == comparable(single)


def test_seed_streams_keep_the_seed_in_stream_zero_and_differ_after() -> None:
    seeds = [stream_seed(7, i) for i in range(SEED_STREAMS)]
    assert seeds[0] == 7
    assert len(set(seeds)) == SEED_STREAMS
    assert seeds == [stream_seed(7, i) for i in range(SEED_STREAMS)]  # derived, not drawn


def test_random_streams_cover_the_budget_and_say_so() -> None:
    result = explore_parallel(get("get-put"), "random", budget=101, jobs=1)
    assert result.stats.schedules == 101
    assert result.strategy == f"random (seed 0), in {SEED_STREAMS} seed streams"
    assert result.verdict == "101 sampled schedules, not exhaustive: no finding"


def test_a_plugin_scenario_and_a_file_scenario_are_found_by_the_workers(tmp_path: Path) -> None:
    path = tmp_path / "races.py"
    path.write_text(LOST_UPDATE)
    scenario = load_file(path, "lost-update")
    one = explore_parallel(scenario, "dfs", jobs=1)
    two = explore_parallel(scenario, "dfs", jobs=2)
    assert comparable(two) == comparable(one)
    assert one.findings and one.findings[0].problem.kind.value == "invariant"
    assert "mx2:file=" in one.findings[0].schedule
    hmm = get("hmm-getput-invalidate", plugins=True)
    assert comparable(explore_parallel(hmm, "dfs", preemptions=1, jobs=2)) == comparable(
        explore_parallel(hmm, "dfs", preemptions=1, jobs=1)
    )


def test_a_scenario_registered_in_code_runs_with_one_job_only() -> None:
    def build() -> ScenarioInstance:
        return ScenarioInstance()

    scenario = register(Scenario("jobs-test-registered", build))
    try:
        assert explore_parallel(scenario, "dfs", jobs=1).complete
        with pytest.raises(UsageError, match=r"registered in code.*jobs=1"):
            explore_parallel(scenario, "dfs", jobs=2)
    finally:
        unregister("jobs-test-registered")


@pytest.mark.parametrize("jobs", [0, -1, 1.5, "2", True])
def test_bad_jobs_values_are_usage_errors(jobs: Any) -> None:
    with pytest.raises(UsageError, match="jobs must be a whole number"):
        explore_parallel(get("get-put"), "dfs", jobs=jobs)
    with pytest.raises(UsageError, match="jobs must be a whole number"):
        explore_sharded(get("get-put"), "dfs", jobs=jobs)


def test_the_engine_needs_a_finder_to_use_other_processes() -> None:
    with pytest.raises(UsageError, match="without a finder"):
        explore_sharded(get("get-put"), "dfs", jobs=2)
    assert explore_sharded(get("get-put"), "dfs", jobs=1).complete  # one job: the scenario object itself


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--jobs must be at least 1, got 0"),
        ("-1", "--jobs must be at least 1, got -1"),
        ("x", "--jobs must be a whole number of processes, got 'x'"),
        ("1.5", "--jobs must be a whole number of processes, got '1.5'"),
    ],
)
def test_cli_bad_jobs_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], value: str, message: str) -> None:
    code, out, err = run(capsys, "explore", "get-put", f"--jobs={value}")
    assert code == 2
    assert out == ""
    assert err == f"mmu-notifier: explore: {message}\n"


@pytest.mark.parametrize("target", [["get-put"], ["--all"]])
def test_cli_bad_scheduler_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, target: list[str]
) -> None:
    import importlib

    from mmu_notifier.explore import _shards

    pytest.importorskip("distributed", reason="Dask distributed is not installed")
    # a malformed address: refused before a client exists (one that failed on it kept the process from exiting)
    code, out, err = run(capsys, "explore", *target, "--scheduler", "foo://bar")
    assert (code, out) == (2, "")
    assert err.startswith("mmu-notifier: explore: --scheduler: 'foo://bar' is not a Dask scheduler address: unknown")
    assert err.count("\n") == 1
    # nothing listens there: refused once the connect timeout is over
    monkeypatch.setattr(_shards, "DASK_CONNECT_TIMEOUT", 0.5)
    code, out, err = run(capsys, "explore", *target, "--scheduler", "tcp://127.0.0.1:1")
    assert (code, out) == (2, "")
    assert err.startswith("mmu-notifier: explore: --scheduler: cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'")
    assert err.count("\n") == 1
    # Dask is not installed
    real = importlib.import_module

    def without_dask(name: str, package: str | None = None) -> Any:
        if name.split(".")[0] == "distributed":
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_dask)
    code, out, err = run(capsys, "explore", *target, "--scheduler", "tcp://127.0.0.1:8786")
    assert (code, out, err) == (
        2, "", "mmu-notifier: explore: --scheduler needs Dask distributed: pip install 'mmu-notifier[distributed]'\n"
    )


def _all_report(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *flags: str) -> tuple[int, str]:
    """``explore --all --strategy dpor`` over a few built-ins and one scenario only this process knows."""
    from mmu_notifier.scenarios import BUILTIN
    from mmu_notifier.scenarios import cli as explore_cli

    def build() -> ScenarioInstance:
        run = ScenarioInstance()
        run.thread("A")(lambda: None)
        return run

    names = ("get-put", "unregister-no-release", "abba-deadlock", "sleep-under-spinlock", "lock-order-inversion")
    chosen = {s.name: s for s in BUILTIN if s.name in names}
    local = Scenario("claims-a-deadlock", build, "clean, but declares a deadlock", "deadlock")  # no source: here
    chosen[local.name] = local
    monkeypatch.setattr(explore_cli, "scenarios", lambda plugins=False: dict(chosen))
    code, out, err = run(capsys, "explore", "--all", "--strategy", "dpor", *flags)
    assert err == ""
    return code, out


def test_cli_all_with_two_jobs_prints_the_report_of_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code1, out1 = _all_report(capsys, monkeypatch)
    code2, out2 = _all_report(capsys, monkeypatch, "--jobs", "2")
    assert code1 == code2 == 1  # the scenario that claims a deadlock is a mismatch, checked in this process
    assert out2 == out1  # line for line, in the scenarios' order
    lines = out1.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == sorted(line.split()[0] for line in lines[:-1])
    assert "MISMATCH" in next(line for line in lines if line.startswith("claims-a-deadlock "))
    assert lines[-1] == "5/6 scenarios show their declared outcome"


def _without_timing(text: str) -> list[str]:
    return [line for line in text.splitlines() if " s\n" not in line + "\n" and "schedules/s" not in line]


def test_cli_two_jobs_print_the_report_of_one(capsys: pytest.CaptureFixture[str]) -> None:
    code1, out1, _ = run(capsys, "explore", "unregister-no-release", "--jobs", "1")
    code2, out2, _ = run(capsys, "explore", "unregister-no-release", "--jobs", "2")
    assert code1 == code2 == 1
    assert "BUG use-after-free" in out1
    assert _without_timing(out2) == _without_timing(out1)
    code1, out1, _ = run(capsys, "explore", "get-put", "--strategy", "dfs", "--jobs", "1")
    code2, out2, _ = run(capsys, "explore", "get-put", "--strategy", "dfs", "--jobs", "2")
    assert code1 == code2 == 0
    assert out1.splitlines()[0].endswith("exhaustive to 2 preemptions: clean")
    assert _without_timing(out2) == _without_timing(out1)


@pytest.mark.parametrize(
    "command",
    [
        ("explore", "get-put", "--strategy", "random", "--budget", "10000000", "--jobs", "2"),
        ("explore", "--all", "--strategy", "random", "--budget", "10000000", "--jobs", "2"),  # scenarios side by side
    ],
)
def test_ctrl_c_stops_the_workers_and_exits_130(command: tuple[str, ...]) -> None:
    """SIGINT to the whole process group (what a terminal's Ctrl-C does): one line, exit 130, no worker left."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mmu_notifier.cli", *command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        workers = _workers(process.pid)
        while not workers and time.monotonic() < deadline and process.poll() is None:  # a loaded machine is slow
            time.sleep(0.2)
            workers = _workers(process.pid)
        assert workers, f"no worker process started (the command's exit status: {process.poll()})"
        time.sleep(1)  # the worker is running shards now
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err
    assert err == "mmu-notifier: interrupted\n"
    time.sleep(0.5)
    assert not [pid for pid in workers if _running(pid)]


def _workers(pid: int) -> list[int]:
    """The worker processes of ``pid`` (forked or spawned; not multiprocessing's resource tracker), read from
    /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"resource_tracker" not in command:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped is not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_dask_local_cluster_gives_the_local_result(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = pytest.importorskip(
        "distributed", reason="Dask distributed is not installed: pip install 'mmu-notifier[distributed]'"
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        for name, strategy in [("get-put", "dfs"), ("unregister-no-release", "portfolio"), ("get-put", "random")]:
            local = explore_parallel(get(name), strategy, budget=300, jobs=2)
            remote = explore_parallel(get(name), strategy, budget=300, scheduler=address)
            assert comparable(remote) == comparable(local), (name, strategy)
        code_local, local_all = _all_report(capsys, monkeypatch)
        code_remote, remote_all = _all_report(capsys, monkeypatch, "--scheduler", address)
        assert code_local == code_remote == 1
        assert remote_all == local_all
        hmm = get("hmm-getput-invalidate", plugins=True)
        assert comparable(explore_parallel(hmm, "dfs", preemptions=1, scheduler=address)) == comparable(
            explore_parallel(hmm, "dfs", preemptions=1, jobs=1)
        )
        code_local, local_out, _ = run(capsys, "explore", "unregister-no-release", "--jobs", "1")
        code_dask, dask_out, _ = run(capsys, "explore", "unregister-no-release", "--scheduler", address)
        assert code_local == code_dask == 1
        assert _without_timing(dask_out) == _without_timing(local_out)


def test_a_time_budget_stops_every_shard() -> None:
    start = time.perf_counter()
    result = explore_parallel(get("get-put"), "random", budget=10**9, time_budget=1.0, jobs=2)
    assert time.perf_counter() - start < 30
    assert result.stopped == "time budget"
    assert 0 < result.stats.schedules < 10**9
    assert result.verdict.endswith("sampled schedules, not exhaustive: no finding")


def test_a_split_search_shows_its_progress_as_shards_finish() -> None:
    seen: list[tuple[int, int]] = []
    result = explore_sharded(
        get("unregister-no-release"), "random", budget=400, jobs=2, stop_on_first=False,
        finder=ScenarioRef("unregister-no-release", "builtin"),
        progress=lambda s: seen.append((s.schedules, s.failing)), progress_every=0.0,
    )
    assert len(seen) >= 2  # one call per shard result at least (16 seed streams)
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)  # what the shards ran so far only grows
    assert seen[-1][0] >= result.stats.schedules  # the merge keeps at most what ran
    assert seen[-1][1] >= 1  # the race shows in some shard


def test_cli_progress_with_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explore", "get-put", "--strategy", "random", "--budget", "20000", "--jobs", "2",
                         "--progress")
    assert code == 0
    assert "20,000 sampled schedules" in out.splitlines()[0]
    lines = err.splitlines()
    assert lines and all(line.endswith("/s") and " schedules, " in line for line in lines)


def test_all_a_worker_that_cannot_find_its_scenario_is_one_clear_usage_error() -> None:
    from concurrent.futures import Future

    from mmu_notifier.scenarios import UnknownScenarioError
    from mmu_notifier.scenarios._all import _row

    future: Future[Any] = Future()
    future.set_exception(UnknownScenarioError("no scenario 'mine'"))
    with pytest.raises(UsageError, match=r"a worker process could not find scenario 'get-put'.*same plugins"):
        _row(future, get("get-put"), "worker process")
