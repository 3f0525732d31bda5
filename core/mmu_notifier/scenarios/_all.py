"""``explore --all``: every scenario against its declared outcome, one row each, over processes if asked.

Each scenario's check is independent of the others (its own searches, its own
seeds), so ``--jobs N`` runs them side by side: ``N - 1`` worker processes and
this one, as the sharded search does (forked where the platform allows, else
spawned), and ``--scheduler ADDRESS`` on a Dask distributed cluster. A worker
finds its scenario again by name and source (:class:`ScenarioRef`); one it
cannot find (registered in code in this process) is checked here. The rows come
out in the order of the scenarios, each as soon as it and every row before it
are known, so the report is the same, line for line, for every ``N``.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from mmu_notifier.errors import UsageError
from mmu_notifier.explore import Scenario, dask_client, explore, worker_context, worker_result
from mmu_notifier.scenarios._parallel import ScenarioRef, scenario_ref

#: the searches tried in turn for a scenario declared to show a finding, when no strategy is named
DEFAULT_CHAIN = ("dpor", "pct", "random")


@dataclass(frozen=True, slots=True)
class AllOptions:
    """The search settings every scenario of ``explore --all`` is checked with."""

    strategy: str | None = None
    budget: int = 1000
    seed: int = 0
    time_budget: float | None = None
    depth: int = 2
    preemptions: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One scenario's check: the search that decided it and whether its outcome is the declared one."""

    name: str
    expect: str | None
    strategy: str
    ok: bool
    proved: bool
    verdict: str
    shown: str

    def line(self) -> str:
        """The report's line for this scenario."""
        status = "MISMATCH" if not self.ok else "ok" if self.proved else "ok, not complete"
        expect = self.expect or "clean"
        return f"{self.name:<34} expect {expect:<22} {self.strategy:<7} {status:<17} {self.verdict} [{self.shown}]"


def check(scenario: Scenario, options: AllOptions) -> Row:
    """Check ``scenario`` against its declared outcome.

    A scenario declared clean is explored with DPOR (``preemptions`` bounds it,
    ``budget`` caps it): proved clean when every trace was explored, "not
    complete" when the budget ran out first. A scenario declared to show a
    finding is explored with ``strategy`` (by default DPOR, then PCT, then
    random, until the finding shows; each goes on past other findings).
    """
    searches = [options.strategy] if options.strategy else list(DEFAULT_CHAIN)
    chain = ["dpor"] if scenario.expect is None else searches
    kinds: set[str] = set()
    for strategy in chain:
        result = explore(
            scenario, strategy, options.budget, options.seed, options.time_budget, depth=options.depth,
            preemptions=options.preemptions, stop_on_first=scenario.expect is None, minimise_budget=0, reproduce=0,
        )
        kinds = {f.problem.kind.value for f in result.findings}
        if scenario.expect in kinds:
            break
    ok = scenario.expect in kinds if scenario.expect else not kinds
    proved = scenario.expect is not None or (result.complete and not result.bounded)
    shown = ", ".join(sorted(kinds)) or "clean"
    return Row(scenario.name, scenario.expect, strategy, ok, proved, result.verdict, shown)


def check_ref(ref: ScenarioRef, options: AllOptions) -> Row:
    """:func:`check` in a worker: the scenario found again by name and source."""
    return check(ref.find(), options)


def _ref(scenario: Scenario) -> ScenarioRef | None:
    """How a worker finds ``scenario``, or None: only this process can (it is checked here)."""
    try:
        return scenario_ref(scenario)
    except UsageError:
        return None


def check_all(
    chosen: list[Scenario], options: AllOptions, jobs: int = 1, scheduler: str | None = None
) -> Iterator[Row]:
    """The rows of ``chosen`` in that order, each yielded as soon as it and every row before it are known."""
    if scheduler:
        yield from _on_dask(chosen, options, scheduler)
    elif jobs > 1:
        yield from _on_processes(chosen, options, jobs)
    else:
        for scenario in chosen:
            yield check(scenario, options)


def _in_order(count: int, rows: dict[int, Row], emitted: int) -> tuple[list[Row], int]:
    """The rows from ``emitted`` on that are known, and the new count of rows given out."""
    out = []
    while emitted < count and emitted in rows:
        out.append(rows.pop(emitted))
        emitted += 1
    return out, emitted


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it stops the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_processes(chosen: list[Scenario], options: AllOptions, jobs: int) -> Iterator[Row]:
    """``jobs - 1`` worker processes (two scenarios queued each) plus this one, which takes the next in turn."""
    refs = [_ref(scenario) for scenario in chosen]
    queue = deque(range(len(chosen)))
    pending: dict[Future[Row], int] = {}
    rows: dict[int, Row] = {}
    emitted = 0
    context = worker_context()
    pool = ProcessPoolExecutor(jobs - 1, mp_context=context, initializer=_ignore_sigint)
    aborted = True
    try:
        while emitted < len(chosen):
            while len(pending) < 2 * (jobs - 1):
                index = next((i for i in queue if refs[i] is not None), None)
                if index is None:
                    break
                queue.remove(index)
                pending[pool.submit(check_ref, refs[index], options)] = index  # type: ignore[arg-type]
            if queue:
                index = queue.popleft()
                rows[index] = check(chosen[index], options)
            elif pending:
                wait(list(pending), return_when=FIRST_COMPLETED)
            for future in [f for f in pending if f.done()]:
                index = pending.pop(future)
                rows[index] = _row(future, chosen[index], "worker process")
            ready, emitted = _in_order(len(chosen), rows, emitted)
            yield from ready
        aborted = False
    finally:
        _stop(pool, aborted)


def _row(future: Any, scenario: Scenario, worker: str) -> Row:
    """A worker's row for ``scenario`` (one clear line when the worker could not find it)."""
    row: Row = worker_result(future, scenario.name, worker)
    return row


def _stop(pool: ProcessPoolExecutor, abort: bool) -> None:
    """Stop the workers: at once (terminated) when interrupted or failed, else once idle."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if abort:
        for process in processes:
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join(5)


def _on_dask(chosen: list[Scenario], options: AllOptions, address: str) -> Iterator[Row]:
    """Every scenario a worker can find on the Dask cluster at ``address``; the others here, in turn."""
    _, client = dask_client(address)
    try:
        refs = [_ref(scenario) for scenario in chosen]
        futures = {i: client.submit(check_ref, ref, options, pure=False) for i, ref in enumerate(refs) if ref}
        for index, scenario in enumerate(chosen):
            if index not in futures:
                yield check(scenario, options)
                continue
            yield _row(futures[index], scenario, "Dask worker")
    finally:
        client.close()


def report(rows: Iterator[Row], emit: Callable[[str], None]) -> int:
    """Emit each row's line and the closing count; the number of mismatches."""
    total = mismatches = 0
    for row in rows:
        total += 1
        mismatches += not row.ok
        emit(row.line())
    emit(f"{total - mismatches}/{total} scenarios show their declared outcome")
    return mismatches
