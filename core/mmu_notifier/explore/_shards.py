"""``explore --jobs N``: one exploration split into shards that run in several processes or on a Dask cluster.

The kernel has nothing like this; it is the explorer's own machinery. A
search is cut into *shards*, each an ordinary run of the engine's strategies
(:class:`~mmu_notifier.explore.Execution` driven by a strategy), and the
shards' results are merged in one fixed *global order*, so the merged report
does not depend on how many processes ran them or in which order they ended:

* **bounded DFS and the exhaustive reference** are split by schedule prefix.
  The parent runs the first execution of a subtree (a *probe*); the untried
  alternatives at every decision of that execution below the subtree's prefix
  become subtrees of their own, each a shard that seeds the DFS stack with its
  prefix (with the sleep sets and tried siblings the single search would have
  there, see :attr:`BoundedDFS.floor <mmu_notifier.explore.BoundedDFS>`) and
  explores only below it. The shallowest subtrees are split again and again,
  so that none is large enough to hold the search up at its end. The global
  order is the single search's depth-first order, so the counts, the first
  finding and the verdict are exactly those of the unsharded search. Shards
  are handed out in that order; once every shard before one has ended, the
  parent tells it what is left of the budget (a shared per-shard limit).
* **random walk and PCT** are split into ``streams`` seeded streams (stream 0
  keeps the given seed, stream ``i`` a seed derived from it and ``i``); the
  global order interleaves them (schedule ``j`` of stream ``i`` is number
  ``j * streams + i``), so a budget or a first finding cuts every stream at the
  same height. The number of streams is fixed (not the number of jobs), so
  every ``--jobs`` value gives the same result; it differs from the unsharded
  run, which draws every schedule from one stream.
* **DPOR** is not split (its wakeup trees grow from races found across
  executions): it runs as one shard.
* **the portfolio** runs its phases as the single search does, with the same
  shares of the budget: DPOR as one shard next to the bounded DFS phases
  (split by prefix, bound after bound), then the PCT phases and the random
  walk, each split into seed streams.

Findings are kept per signature at their first schedule in the global order;
the parent replays each one's schedule (under the scheduler modes it was found
with) and minimises and reproduces it exactly as the single search does, so
the finding, its minimised schedule and its replay command are the same.

Shards carry a *finder* (:class:`ScenarioFinder`) instead of the scenario, so
a worker finds the scenario itself: a process started with ``spawn``, or a
Dask worker on another machine with the same plugins installed. The engine
knows no scenario library; :mod:`mmu_notifier.scenarios` gives a finder that
looks the scenario up by name and source (a built-in, a plugin's, a
conformance race, a file), as ``mx2:`` schedule strings do. Without a finder
a scenario explores with ``jobs=1`` only (in this process).

Local runs use ``concurrent.futures.ProcessPoolExecutor`` with ``jobs - 1``
workers, forked where the platform allows it and the process runs one thread
(they start at once), else spawned (see :func:`_start_method`); the parent runs shards too, so a short
search is not held up by the workers' start; results are collected as they
come, so a worker is fed while the parent runs a shard. Workers share a cut
(a ``multiprocessing.Value``: no schedule past it is needed) and the
per-shard limits. Workers ignore SIGINT: Ctrl-C reaches the parent, which
terminates them. Dask runs (``scheduler=ADDRESS``)
send the same shards to the cluster's workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mmu_notifier.errors import UsageError
from mmu_notifier.explore import _dfs as dfs_internals
from mmu_notifier.explore import _explorer as engine
from mmu_notifier.explore import _portfolio as portfolio_shares
from mmu_notifier.explore._dfs import BoundedDFS, Exhaustive
from mmu_notifier.explore._dpor import DPOR
from mmu_notifier.explore._explorer import Exploration, NondeterministicScenarioError
from mmu_notifier.explore._portfolio import Portfolio
from mmu_notifier.explore._scenario import Scenario
from mmu_notifier.explore._scheduler import ABORTED, STEP_BOUND, Execution
from mmu_notifier.explore._stats import Stats
from mmu_notifier.explore._strategies import PCT, RandomWalk, Replay, Strategy

if TYPE_CHECKING:  # concurrent.futures (and its logging) is imported when a pool is used
    from concurrent.futures import Future, ProcessPoolExecutor

    from mmu_notifier.explore._sharded import ScenarioFinder

#: seeded streams a random or PCT search is split into (whatever the number of jobs)
SEED_STREAMS = 16
#: a cut no schedule reaches
_NO_CUT = (1 << 62) - 1
#: the global position of a DFS shard's schedule: shard key << _SHARD_BITS | local index
_SHARD_BITS = 32
#: a phase's rank in a portfolio's global position: rank << _PHASE_BITS | position inside the phase
_PHASE_BITS = 44
#: modes under which a found schedule replays (retry_steps, lazy_waits, run_past_failures, records)
Modes = tuple[bool, bool, bool, bool]
_DEFAULT_MODES: Modes = (False, False, False, False)


# --------------------------------------------------------------------------------------------- scenarios


_found: dict[Any, Scenario] = {}
_warmed: set[str] = set()
#: the engine's backend is per process: shards in one process (Dask worker threads) run one at a time
_one_at_a_time = threading.Lock()


def _scenario(ref: ScenarioFinder | None, local: Scenario | None) -> Scenario:
    """The scenario of a shard: the parent's own object, or the one this worker found (once), warmed up once."""
    if local is not None:
        sc = local
    else:
        assert ref is not None, "a shard in a worker names its scenario"
        sc = _found.get(ref) or ref.find()
        _found[ref] = sc
    if sc.name not in _warmed:
        # a scenario's first build fills per-process caches (a driver loaded once): done before any shard, in
        # every process alike, so a shard runs the same wherever it runs
        engine.warm_up(sc, BoundedDFS(0))
        _warmed.add(sc.name)
    return sc


# --------------------------------------------------------------------------------------------- shards


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One decision of a DFS prefix, as the single search's stack holds it when the shard's subtree starts."""

    cands: tuple[int, ...]
    current: int
    preemptions: int
    sleep: frozenset[int]
    done: frozenset[int]
    chosen: int


@dataclass(frozen=True, slots=True)
class Shard:
    """One piece of a search: what to run, at most how many schedules, and where it sits in the global order.

    ``kind`` is ``dfs`` or ``exhaustive`` (``bound`` and ``prefix``), ``dpor``
    (``bound``: its preemption bound, -1 unbounded), ``random`` or ``pct``
    (``seed``, ``depth``). The global position of local schedule ``j`` is
    ``base + j * stride``; a shard stops before a schedule past the shared cut.
    ``probe`` runs one execution and returns the DFS stack it left.
    """

    key: int
    kind: str
    limit: int
    base: int = 0
    stride: int = 1
    bound: int = -1
    prefix: tuple[NodeSpec, ...] = ()
    seed: int = 0
    depth: int = 2
    stop_on_first: bool = True
    max_steps: int | None = None
    deadline: float | None = None
    probe: bool = False
    #: index into the shared limits the parent lowers while the shard runs (-1: none)
    slot: int = -1


@dataclass(frozen=True, slots=True)
class Found:
    """A problem a shard saw first (per signature), with the schedule that shows it and how to replay it."""

    index: int
    signature: tuple[str, str]
    predictive: bool
    choices: tuple[int, ...]
    modes: Modes
    note: str | None = None


@dataclass(slots=True)
class ShardResult:
    """What a shard ran: per schedule (hash of its choices, steps, flags), its first findings, how it ended."""

    key: int
    #: per schedule: (hash of its choices, steps, hit the step bound, failing, real bug, abandoned by a reduction)
    runs: list[tuple[int, int, bool, bool, bool, bool]] = field(default_factory=list)
    found: list[Found] = field(default_factory=list)
    exhausted: bool = False
    timed_out: bool = False
    nondeterminism: str | None = None
    #: DPOR's own counts
    traces: int | None = None
    bounded: bool = False
    unfollowed: int = 0
    pruned: int = 0
    #: a probe: the DFS stack of its execution, before backtracking
    stack: tuple[NodeSpec, ...] | None = None


def stream_seed(seed: int, stream: int) -> int:
    """The seed of stream ``stream`` of a search seeded ``seed`` (stream 0 keeps ``seed``)."""
    if stream == 0:
        return seed
    digest = hashlib.blake2b(f"mmu-notifier stream {seed} {stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _modes(strat: Strategy) -> Modes:
    return (bool(strat.retry_steps), bool(strat.lazy_waits), bool(strat.run_past_failures), bool(strat.records))


class _ModalReplay(Replay):
    """A replay under given scheduler modes (a schedule found by DPOR's or the exhaustive search's modes)."""

    def __init__(self, steps: tuple[int, ...], modes: Modes) -> None:
        super().__init__(steps)
        self.retry_steps, self.lazy_waits, self.run_past_failures, self.records = modes


def _strategy(shard: Shard) -> Strategy:
    """The engine's strategy a shard runs (a DFS with its prefix seeded and its floor set)."""
    if shard.kind in ("dfs", "exhaustive"):
        strat: BoundedDFS = Exhaustive() if shard.kind == "exhaustive" else BoundedDFS(shard.bound)
        for spec in shard.prefix:
            node = dfs_internals._Node(spec.cands, spec.current, spec.preemptions, spec.sleep)
            node.done = set(spec.done)
            node.chosen = spec.chosen
            strat._stack.append(node)
        strat.floor = len(shard.prefix)
        return strat
    if shard.kind == "dpor":
        return DPOR(None if shard.bound < 0 else shard.bound)
    if shard.kind == "random":
        return RandomWalk(shard.seed)
    if shard.kind == "pct":
        return PCT(shard.depth, shard.seed)
    raise ValueError(f"unknown shard kind {shard.kind!r}")


def _snapshot(strat: BoundedDFS) -> tuple[NodeSpec, ...]:
    return tuple(
        NodeSpec(n.cands, n.current, n.preemptions, frozenset(n.sleep), frozenset(n.done), n.chosen)
        for n in strat._stack
    )


class _LocalCut:
    """The cut of an in-process run (one process: no lock needed)."""

    def __init__(self) -> None:
        self.value = _NO_CUT


_cut: Any = None  # the worker's shared cut (a multiprocessing Value), set by the pool's initializer
_limits: Any = None  # the worker's view of the shared per-slot limits (a multiprocessing Array)
#: shards with a slot below this get a limit the parent can lower while they run (DFS shards: their position)
LIMIT_SLOTS = 4096


def _start_method() -> str:
    """``fork`` where the platform has it and this process runs one thread (a worker then starts at once,
    with the model already imported: about 0.1 s instead of 0.2 s+ per worker), else ``spawn``.

    Workers find their scenario through the finder either way (a forked worker does not rely on the
    parent's state), so every start method gives the same results; with other threads running, fork
    could copy a lock mid-use, so such a process spawns.
    """
    import multiprocessing
    import threading

    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _init_worker(cut: Any, limits: Any) -> None:
    """Pool initializer: Ctrl-C is the parent's to handle; remember the shared cut and limits."""
    global _cut, _limits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _cut = cut
    _limits = limits


def _lower(cut: Any, position: int) -> None:
    """Lower the shared cut to ``position`` (a first finding there)."""
    if cut is None:
        return
    lock = getattr(cut, "get_lock", None)
    if lock is None:
        cut.value = min(cut.value, position)
        return
    with lock():
        if position < cut.value:
            cut.value = position


def run_shard(
    ref: ScenarioFinder | None, shard: Shard, local: Scenario | None = None, cut: Any = None, limits: Any = None
) -> ShardResult:
    """Run one shard and return what it ran and found (the function workers call)."""
    with _one_at_a_time:
        return _run_shard(_scenario(ref, local), shard, cut if cut is not None else _cut,
                          limits if limits is not None else _limits)


def _run_shard(sc: Scenario, shard: Shard, cut: Any, limits: Any = None) -> ShardResult:
    strat = _strategy(shard)
    result = ShardResult(shard.key)
    report = getattr(strat, "report", None)
    modes = _modes(strat)
    seen: set[tuple[str, str]] = set()
    index = 0
    slot = shard.slot if limits is not None else -1
    while index < shard.limit:
        if cut is not None and shard.base + index * shard.stride > cut.value:
            break
        if slot >= 0 and index >= limits[slot]:  # the schedules before this shard used the budget up to here
            break
        if shard.deadline is not None and time.time() >= shard.deadline:
            result.timed_out = True
            break
        if not strat.start():
            break
        outcome = Execution(sc, strat, shard.max_steps).run()
        if shard.probe:
            assert isinstance(strat, BoundedDFS)
            result.stack = _snapshot(strat)
        strat.finish(outcome)
        failing = outcome.problem is not None or outcome.predicted is not None
        real = outcome.problem is not None
        choices = outcome.choices
        # an abandoned execution is what the DFS counts as pruned (DPOR counts its own, reported below)
        result.runs.append((hash(choices), len(choices), outcome.status == STEP_BOUND, failing, real,
                            outcome.status == ABORTED and isinstance(strat, BoundedDFS)))
        if failing:
            shown = report(outcome) if report is not None else [
                (p, None) for p in (outcome.problem, outcome.predicted) if p is not None
            ]
            for problem, steps in shown:
                if problem.signature in seen:
                    continue
                seen.add(problem.signature)
                result.found.append(_found_record(sc, index, problem, outcome, steps, modes, shard.max_steps))
        index += 1
        if shard.stop_on_first and real:
            _lower(cut, shard.base + (index - 1) * shard.stride)
            break
        if shard.probe:
            break
    result.exhausted = strat.exhausted
    result.nondeterminism = strat.nondeterminism
    result.pruned = strat.pruned
    if isinstance(strat, DPOR):
        result.traces = strat.traces
        result.bounded = bool(strat.bounded)
        result.unfollowed = int(strat.unexecutable)
    return result


def _found_record(
    sc: Scenario, index: int, problem: Any, outcome: Any, steps: tuple[int, ...] | None, modes: Modes,
    max_steps: int | None,
) -> Found:
    """The finding as the parent replays it: the schedule the report shows, and its modes."""
    if steps is None:
        return Found(index, problem.signature, problem.predictive, outcome.choices, modes)
    shown = engine._shown(sc, problem, outcome, steps, max_steps)
    if shown is outcome:  # the default scheduler did not show it again: reported as found, with the note
        return Found(index, problem.signature, problem.predictive, outcome.choices, modes,
                     problem.details.get("note"))
    return Found(index, problem.signature, problem.predictive, shown.choices, _DEFAULT_MODES)


# --------------------------------------------------------------------------------------------- runners


class _Runner(Protocol):
    """Runs a batch of shards, skipping those past its ``cut``; ``hook`` sees every result as it comes."""

    cut: Any
    limits: Any
    on_result: Callable[[ShardResult], None] | None

    def run(
        self, shards: list[Shard], hook: Callable[[ShardResult], None], adjust: Callable[[Shard], Shard | None] = ...
    ) -> dict[int, ShardResult]: ...

    def reset_cut(self) -> None: ...

    def close(self, abort: bool) -> None: ...


class LocalRunner:
    """``jobs - 1`` spawned worker processes plus the parent itself; ``jobs=1`` runs everything in the parent."""

    def __init__(self, scenario: Scenario, jobs: int, finder: ScenarioFinder | None) -> None:
        self.scenario = scenario
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None
        self._closing = False
        #: told of every shard's result as it comes (the progress display), after the search's own hook
        self.on_result: Callable[[ShardResult], None] | None = None
        self.cut: Any = _LocalCut()
        self.limits: Any = [_NO_CUT] * LIMIT_SLOTS
        self.ref = finder
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context(_start_method())
            self.ref = _require_finder(scenario, finder)
            self.cut = context.Value("q", _NO_CUT)
            self.limits = context.Array("q", self.limits, lock=False)  # one writer (the parent), stale reads harmless
            self.pool = ProcessPoolExecutor(jobs - 1, mp_context=context, initializer=_init_worker,
                                            initargs=(self.cut, self.limits))

    def reset_cut(self) -> None:
        _lower_reset(self.cut)
        self.limits[:] = [_NO_CUT] * LIMIT_SLOTS

    def run(
        self, shards: list[Shard], hook: Callable[[ShardResult], None],
        adjust: Callable[[Shard], Shard | None] = lambda shard: shard,
    ) -> dict[int, ShardResult]:
        """Run ``shards`` (in this order) on the workers and here; ``hook`` sees each result as it comes.

        A shard past the cut when its turn comes is not run at all; ``adjust`` sees each shard as it is handed
        out (a smaller limit once the schedules before it are known, or None: not needed).
        """
        from concurrent.futures import wait

        queue = deque(shards)
        results: dict[int, ShardResult] = {}
        # results are collected (and ``hook`` called) as they come, also from the pool's thread while the parent
        # runs a shard of its own: a limit the hook sets then reaches that shard too
        lock = threading.RLock()
        pending: list[Future[ShardResult]] = []
        errors: list[BaseException] = []

        def collect(result: ShardResult) -> None:
            with lock:
                results[result.key] = result
                hook(result)
                if self.on_result is not None:
                    self.on_result(result)

        def prepare(shard: Shard) -> Shard | None:
            return adjust(shard) if shard.base <= self.cut.value else None

        def done(future: Future[ShardResult]) -> None:
            if self._closing or future.cancelled():
                return
            try:
                error = future.exception()
                if error is not None:
                    errors.append(error)
                else:
                    collect(future.result())
            except Exception as failure:  # raised again in the parent's loop, never lost in the pool's thread
                errors.append(failure)
            finally:
                with lock:
                    pending.remove(future)
            try:
                feed()
            except Exception as failure:
                errors.append(failure)

        def feed() -> None:
            # keeps every worker busy with one shard running and one queued, whatever the parent is doing
            with lock:
                while self.pool is not None and queue and len(pending) < 2 * (self.jobs - 1):
                    ready = prepare(queue.popleft())
                    if ready is None:
                        continue
                    try:
                        future = self.pool.submit(run_shard, self.ref, ready)
                    except RuntimeError:  # BrokenProcessPool is one
                        if self._closing:  # Ctrl-C: the parent is stopping the workers
                            return
                        raise
                    pending.append(future)
                    future.add_done_callback(done)  # a future already done calls it here: the lock is re-entrant

        def take() -> Shard | None:
            with lock:
                while queue:
                    ready = prepare(queue.popleft())
                    if ready is not None:
                        return ready
            return None

        while True:
            if errors:
                raise errors[0]
            feed()
            shard = take()
            if shard is not None:
                collect(run_shard(None, shard, self.scenario, self.cut, self.limits))
                continue
            with lock:
                waiting = list(pending)
            if not waiting:
                break
            wait(waiting, timeout=0.05)  # ``done`` collects; this only sleeps until something happened
        if errors:
            raise errors[0]
        return results

    def close(self, abort: bool) -> None:
        """Stop the workers: at once (terminated) when the search was interrupted, else once idle."""
        self._closing = True
        if self.pool is None:
            return
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        if abort:
            for process in processes:
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for process in processes:
            process.join(5)
        self.pool = None


def _lower_reset(cut: Any) -> None:
    lock = getattr(cut, "get_lock", None)
    if lock is None:
        cut.value = _NO_CUT
        return
    with lock():
        cut.value = _NO_CUT


def worker_result(future: Any, scenario: str, worker: str) -> Any:
    """``future.result()`` of work sent to a ``worker`` (a Dask worker, a worker process) about ``scenario``.

    A worker that cannot find the scenario (a plugin that loads here but not there, a scenario file at
    another path) raises the library's ``UnknownScenarioError`` (a ``KeyError``) or a :class:`UsageError`:
    one clear line here, not the worker's traceback.
    """
    try:
        return future.result()
    except (UsageError, KeyError) as error:
        raise UsageError(
            f"explore: a {worker} could not find scenario {scenario!r} ({error}): install the same plugins "
            f"(and scenario files, at the same paths) wherever the workers run"
        ) from None


#: seconds to reach a Dask scheduler before ``--scheduler`` gives up (Dask's own default connect timeout)
DASK_CONNECT_TIMEOUT = 30.0


def connect_dask(address: str) -> tuple[Any, Any]:
    """The ``distributed`` module and a client of the Dask scheduler at ``address`` (typed ``Any``: it ships no
    type information); a :class:`UsageError` naming the flag when Dask is missing, the address is not one or
    the scheduler cannot be reached."""
    try:
        dask: Any = importlib.import_module("distributed")
    except ImportError:
        raise UsageError(
            "explore: --scheduler needs Dask distributed: pip install 'mmu-notifier[distributed]'"
        ) from None
    try:
        # checked before a client exists: a client that failed on a malformed address left the process
        # unable to exit (Dask's IO loop)
        scheme, _ = importlib.import_module("distributed.comm").parse_address(address)
        importlib.import_module("distributed.comm.registry").get_backend(scheme)
    except (ValueError, TypeError) as error:
        raise UsageError(f"explore: --scheduler: {address!r} is not a Dask scheduler address: {error}") from None
    try:
        client: Any = dask.Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise UsageError(f"explore: --scheduler: cannot reach the Dask scheduler at {address!r}: {error}") from None
    except (ValueError, TypeError) as error:  # the address is malformed (an unknown scheme ...)
        raise UsageError(f"explore: --scheduler: {address!r} is not a Dask scheduler address: {error}") from None
    return dask, client


class DaskRunner:
    """The same shards on a Dask distributed cluster (``pip install 'mmu-notifier[distributed]'``).

    Workers need this package and the same plugins installed; they find the
    scenario by name and source. A shard that is no longer needed (a finding
    earlier in the global order) is cancelled if it has not finished.
    """

    def __init__(self, scenario: Scenario, address: str, finder: ScenarioFinder | None) -> None:
        self.ref = _require_finder(scenario, finder)
        self.dask, self.client = connect_dask(address)
        self.jobs = max(1, sum(self.client.nthreads().values()))
        self.on_result: Callable[[ShardResult], None] | None = None
        self.cut: Any = _LocalCut()
        self.limits: Any = [_NO_CUT] * LIMIT_SLOTS  # the parent's only: remote shards keep their limits

    def reset_cut(self) -> None:
        """The cut is the parent's only (no shared memory across machines): it cancels unneeded shards."""
        self.cut.value = _NO_CUT

    def run(
        self, shards: list[Shard], hook: Callable[[ShardResult], None],
        adjust: Callable[[Shard], Shard | None] = lambda shard: shard,
    ) -> dict[int, ShardResult]:
        """Submit every shard; as results come, cancel those the cut has made unnecessary."""
        ready = [r for r in map(adjust, shards) if r is not None]
        futures = {self.client.submit(run_shard, self.ref, s, pure=False): s for s in ready}
        results: dict[int, ShardResult] = {}
        for future in self.dask.as_completed(list(futures), loop=self.client.loop):
            if future.cancelled() or future.status == "cancelled":
                continue
            result: ShardResult = worker_result(future, self.ref.name, "Dask worker")
            results[result.key] = result
            hook(result)
            if self.on_result is not None:
                self.on_result(result)
            for other, shard in futures.items():
                if not other.done() and shard.base > self.cut.value:
                    other.cancel()
        return results

    def close(self, abort: bool) -> None:
        self.client.close()


def _require_finder(scenario: Scenario, finder: ScenarioFinder | None) -> ScenarioFinder:
    """``finder``, or a :class:`UsageError`: other processes cannot find a scenario without one."""
    if finder is None:
        raise UsageError(
            f"scenario {scenario.name!r}: other processes cannot find it without a finder, so it explores with "
            f"jobs=1 only (mmu_notifier.scenarios.explore_parallel gives one for the scenario library's scenarios)"
        )
    return finder


# --------------------------------------------------------------------------------------------- merging


class _Merge:
    """Schedules in the global order, cut at the budget or (when asked) at the first real bug."""

    def __init__(self, budget: int, stop_on_first: bool) -> None:
        self.budget = budget
        self.stop_on_first = stop_on_first
        self.stats = Stats()
        self.hashes: set[int] = set()
        self.found: dict[tuple[str, str], tuple[Found, int]] = {}
        self.stopped: str | None = None
        self.pruned = 0
        self.timed_out = False

    @property
    def full(self) -> bool:
        return self.stopped is not None

    def take(self, runs: Iterable[tuple[tuple[int, int, bool, bool, bool, bool], list[Found]]],
             limit: int | None = None) -> int:
        """Add schedules in order until the budget, a first finding or ``limit`` (a phase's share) stops; how many
        were kept."""
        kept = 0
        for (h, steps, bound, failing, real, aborted), found in runs:
            if self.stopped is not None or (limit is not None and kept >= limit):
                break
            if self.stats.schedules >= self.budget:
                self.stopped = engine.STOP_BUDGET
                break
            self.stats.count(steps, bound)
            self.hashes.add(h)
            self.pruned += aborted
            kept += 1
            if failing:
                self.stats.failing += 1
                for f in found:
                    self.found.setdefault(f.signature, (f, self.stats.schedules))
            if self.stop_on_first and real:
                self.stopped = engine.STOP_FIRST
        return kept

    @staticmethod
    def ordered_runs(results: list[ShardResult]) -> Iterator[tuple[Any, list[Found]]]:
        """The runs of shards merged one after another."""
        for result in results:
            found = _by_index(result)
            for i, run in enumerate(result.runs):
                yield run, found.get(i, [])


def _by_index(result: ShardResult) -> dict[int, list[Found]]:
    out: dict[int, list[Found]] = {}
    for f in result.found:
        out.setdefault(f.index, []).append(f)
    return out


def _interleaved(results: list[ShardResult]) -> Iterator[tuple[Any, list[Found]]]:
    """The runs of seed streams in their global order: schedule j of every stream, then j + 1."""
    found = [_by_index(r) for r in results]
    height = max((len(r.runs) for r in results), default=0)
    for j in range(height):
        for i, result in enumerate(results):
            if j < len(result.runs):
                yield result.runs[j], found[i].get(j, [])


# --------------------------------------------------------------------------------------------- the search


@dataclass
class _Plan:
    """Parameters of one sharded exploration."""

    budget: int
    seed: int
    depth: int
    preemptions: int | None
    stop_on_first: bool
    max_steps: int | None
    deadline: float | None
    streams: int
    jobs: int


class _Search:
    """Runs the phases of a sharded exploration on a runner and merges them."""

    def __init__(self, sc: Scenario, runner: _Runner, plan: _Plan) -> None:
        self.sc = sc
        self.runner = runner
        self.plan = plan
        self.merge = _Merge(plan.budget, plan.stop_on_first)
        self.nondeterminism: str | None = None
        self._key = 0

    def _next_key(self) -> int:
        self._key += 1
        return self._key

    def _note(self, results: Iterable[ShardResult]) -> None:
        for r in results:
            if r.nondeterminism and self.nondeterminism is None:
                self.nondeterminism = r.nondeterminism
            self.merge.timed_out |= r.timed_out

    # -- DFS by prefix

    def dfs(self, kind: str, bound: int, limit: int) -> tuple[list[ShardResult], bool]:
        """Shards of one bounded (or exhaustive) DFS in its depth-first order, and whether it ran to its end."""
        plan = self.plan
        # the order: items are finished probes or pending subtrees; expand the shallowest subtrees first
        items: list[ShardResult | Shard] = [self._dfs_shard(kind, bound, (), limit)]
        # subtrees near the root are the large ones: split the shallowest again and again, so that the last
        # shards to end are small ones (a probe costs one execution, which counts as the subtree's first)
        probes = max(16, 12 * plan.jobs)
        ran = 0
        while True:
            pending = [(len(it.prefix), i) for i, it in enumerate(items) if isinstance(it, Shard)]
            if not pending or ran >= probes or ran >= limit:
                break
            if plan.deadline is not None and time.time() >= plan.deadline:
                break
            _, at = min(pending)
            shard = items[at]
            assert isinstance(shard, Shard)
            probe = run_shard(None, dataclasses.replace(shard, probe=True, limit=1), self.sc, None)
            ran += 1
            self._note([probe])
            if self.nondeterminism:
                break
            children = [self._dfs_shard(kind, bound, prefix, limit) for prefix in _alternatives(probe, shard, bound)]
            probe.stack = None
            probe.exhausted = True  # its subtree is the probe's execution and the children
            items[at : at + 1] = [probe, *children]
            if plan.stop_on_first and any(run[4] for run in probe.runs):
                if items[at + 1 :]:  # nothing after a first finding counts: the search is not complete
                    probe.exhausted = False
                    del items[at + 1 :]
                break
        shards = [it for it in items if isinstance(it, Shard)]
        # the global order is the items' order: shard keys << 32 are their positions
        position = {id(it): n for n, it in enumerate(items)}
        keyed = [dataclasses.replace(s, base=position[id(s)] << _SHARD_BITS,
                                     slot=position[id(s)] if position[id(s)] < LIMIT_SLOTS else -1) for s in shards]
        counts: dict[int, int] = {position[id(it)]: len(it.runs) for it in items if isinstance(it, ShardResult)}
        base_of = {s.key: s.base >> _SHARD_BITS for s in keyed}
        cut = self.runner.cut
        limits = self.runner.limits

        def hook(result: ShardResult) -> None:
            # the budget is spent once the shards up to some position, all finished, ran ``limit`` schedules:
            # nothing after that position is needed; the first shard still running needs at most what is left
            counts[base_of[result.key]] = len(result.runs)
            total = 0
            for n in range(len(items)):
                if n not in counts:
                    if n < LIMIT_SLOTS:
                        limits[n] = limit - total
                    return
                total += counts[n]
                if total >= limit:
                    _lower(cut, ((n + 1) << _SHARD_BITS) - 1)
                    return

        def adjust(shard: Shard) -> Shard | None:
            # once every shard before this one has ended, it needs at most what is left of the budget
            total = 0
            for n in range(shard.base >> _SHARD_BITS):
                if n not in counts:
                    return shard
                total += counts[n]
            return None if total >= limit else dataclasses.replace(shard, limit=min(shard.limit, limit - total))

        self.runner.reset_cut()
        # handed out in the global order, so that a budget cut (the hook) stops the shards after it early; the
        # repeated splitting of the shallowest subtrees leaves none large enough to make the search end on it
        done = self.runner.run(keyed, hook, adjust) if keyed else {}
        self._note(done.values())
        ordered: list[ShardResult] = []
        complete = True
        for it in items:
            result = it if isinstance(it, ShardResult) else done.get(it.key)
            if result is None:
                complete = False  # not run: a finding earlier in the order made it unnecessary
                break
            ordered.append(result)
            complete &= result.exhausted and not result.timed_out
        return ordered, complete

    def _dfs_shard(self, kind: str, bound: int, prefix: tuple[NodeSpec, ...], limit: int) -> Shard:
        p = self.plan
        return Shard(self._next_key(), kind, limit, bound=bound, prefix=prefix, stop_on_first=p.stop_on_first,
                     max_steps=p.max_steps, deadline=p.deadline)

    # -- seed streams

    def streams(self, kind: str, seed: int, depth: int, budget: int, rank: int = 0) -> list[Shard]:
        """``budget`` schedules of one random or PCT search as seed streams (schedule j of stream i: j*S + i)."""
        p = self.plan
        n = p.streams
        return [
            Shard(self._next_key(), kind, (budget - i + n - 1) // n, base=(rank << _PHASE_BITS) + i, stride=n,
                  seed=stream_seed(seed, i), depth=depth, stop_on_first=p.stop_on_first, max_steps=p.max_steps,
                  deadline=p.deadline)
            for i in range(n)
            if budget - i > 0
        ]

    def run_streams(self, shards: list[Shard]) -> dict[int, ShardResult]:
        """Run seed streams (or one DPOR shard): their limits are exact, only a first finding cuts them."""
        self.runner.reset_cut()
        done = self.runner.run(shards, lambda result: None)
        self._note(done.values())
        return done


def _alternatives(probe: ShardResult, shard: Shard, bound: int) -> list[tuple[NodeSpec, ...]]:
    """The subtrees the probe's execution leaves untried below the shard's prefix, in depth-first order."""
    stack = probe.stack or ()
    floor = len(shard.prefix)
    out: list[tuple[NodeSpec, ...]] = []
    for depth in range(len(stack) - 1, floor - 1, -1):
        spec = stack[depth]
        node = dfs_internals._Node(spec.cands, spec.current, spec.preemptions, spec.sleep)
        node.done = set(spec.done) | {spec.chosen}
        alt = node.next_choice(bound)
        while alt >= 0:
            out.append((*stack[:depth], dataclasses.replace(spec, done=frozenset(node.done), chosen=alt)))
            node.done.add(alt)
            alt = node.next_choice(bound)
    return out


class _Progress:
    """The running statistics of a sharded search, from the shards' results as they come.

    What the shards ran so far, not yet cut at the budget or a first finding
    (the merge does that at the end): a display of how far the search got, at
    most every ``every`` seconds. The report's numbers are the merge's.
    """

    def __init__(self, show: Callable[[Stats], None], every: float, start: float) -> None:
        self.show = show
        self.every = every
        self.start = start
        self.stats = Stats()
        self.next = start + every

    def __call__(self, result: ShardResult) -> None:
        stats = self.stats
        for _, steps, bound, failing, _, _ in result.runs:
            stats.count(steps, bound)
            stats.failing += failing
        now = time.perf_counter()
        if now >= self.next:
            stats.elapsed = now - self.start
            self.next = now + self.every
            self.show(stats)


def run_sharded(
    scenario: Scenario,
    strategy: str = "portfolio",
    budget: int = 1000,
    seed: int = 0,
    time_budget: float | None = None,
    *,
    depth: int = 2,
    preemptions: int | None = None,
    stop_on_first: bool = True,
    minimise_budget: int = 2000,
    reproduce: int = 5,
    max_steps: int | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    streams: int | None = None,
    finder: ScenarioFinder | None = None,
    progress: Callable[[Stats], None] | None = None,
    progress_every: float = 0.5,
) -> Exploration:
    """:func:`mmu_notifier.explore.explore_sharded` (see there), once this module is needed."""
    if not isinstance(scenario, Scenario):
        raise UsageError(
            f"mmu_notifier.explore.explore_sharded() takes a Scenario, not {scenario!r}: "
            f"mmu_notifier.scenarios.explore_parallel looks names up"
        )
    sc = scenario
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    streams = SEED_STREAMS if streams is None else streams
    if streams < 1:
        raise UsageError(f"streams must be at least 1, got {streams!r}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1 schedule, got {budget}")
    if strategy not in engine.STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; expected one of {', '.join(engine.STRATEGIES)}")
    if preemptions is not None and preemptions < 0:
        raise ValueError(f"preemption bound must be >= 0, got {preemptions}")
    start = time.perf_counter()
    deadline = time.time() + time_budget if time_budget is not None else None
    runner: _Runner = DaskRunner(sc, scheduler, finder) if scheduler else LocalRunner(sc, jobs, finder)
    plan = _Plan(budget, seed, depth, preemptions, stop_on_first, max_steps, deadline, streams,
                 getattr(runner, "jobs", jobs))
    search = _Search(sc, runner, plan)
    if progress is not None:
        runner.on_result = _Progress(progress, progress_every, start)
    aborted = True
    try:
        if strategy == "portfolio":
            described, coverage, complete, extra = _portfolio(search)
        else:
            described, coverage, complete, extra = _single(search, strategy)
        aborted = False
    finally:
        runner.close(abort=aborted)
    if search.nondeterminism:
        raise NondeterministicScenarioError(f"scenario {sc.name}: {search.nondeterminism}")
    merge = search.merge
    stats = merge.stats
    stats.distinct = len(merge.hashes)
    stats.pruned = merge.pruned + int(extra.get("pruned", 0))
    stats.elapsed = time.perf_counter() - start
    if merge.stopped == engine.STOP_FIRST:
        stopped = engine.STOP_FIRST
    elif merge.timed_out:
        stopped = engine.STOP_TIME
    elif complete and stats.schedules < budget:
        stopped = engine.STOP_EXHAUSTED
    else:
        stopped = engine.STOP_BUDGET
    ordered = sorted(merge.found.values(), key=lambda item: (item[0].predictive, item[1]))
    findings = [_finding(sc, f, n, minimise_budget, reproduce, max_steps) for f, n in ordered]
    return Exploration(
        sc.name, described, stats, findings, complete and not extra.get("unfollowed"),
        stopped=stopped, coverage=coverage, traces=extra.get("traces"), bounded=bool(extra.get("bounded")),
        unfollowed=int(extra.get("unfollowed", 0)),
    )


def _finding(sc: Scenario, found: Found, found_after: int, minimise_budget: int, reproduce: int,
             max_steps: int | None) -> engine.Finding:
    """The report of a merged finding: its schedule replayed here, then minimised and reproduced as usual."""
    strat = _ModalReplay(found.choices, found.modes)
    limit = max(max_steps or sc.max_steps, len(found.choices))
    outcome = Execution(sc, strat, limit).run()
    strat.finish(outcome)
    shown = [p for p in (outcome.problem, outcome.predicted) if p is not None]
    problem = next((p for p in shown if p.signature == found.signature), None)
    if problem is None:
        raise NondeterministicScenarioError(
            f"scenario {sc.name}: a shard's schedule did not show its {found.signature[0]} again in the parent "
            f"({strat.divergence or outcome.status}): the scenario is not deterministic"
        )
    if found.note:
        problem.details["note"] = found.note
    return engine._finding(sc, problem, outcome, found_after, minimise_budget, reproduce, max_steps)


def _single(search: _Search, strategy: str) -> tuple[str, str, bool, dict[str, Any]]:
    """One strategy: DFS/exhaustive by prefix, random/PCT by seed streams, DPOR as one shard."""
    plan = search.plan
    merge = search.merge
    extra: dict[str, Any] = {}
    if strategy in ("dfs", "exhaustive"):
        bound = 2 if plan.preemptions is None else plan.preemptions
        strat: BoundedDFS = Exhaustive() if strategy == "exhaustive" else BoundedDFS(bound)
        results, complete = search.dfs(strategy, strat.bound, plan.budget)
        kept = merge.take(merge.ordered_runs(results))
        complete = complete and kept == sum(len(r.runs) for r in results)
        strat.exhausted = complete
        return strat.describe(), engine._coverage(strat, merge.stats), complete, extra
    if strategy == "dpor":
        bound = -1 if plan.preemptions is None else plan.preemptions
        shard = Shard(search._next_key(), "dpor", plan.budget, bound=bound, stop_on_first=plan.stop_on_first,
                      max_steps=plan.max_steps, deadline=plan.deadline)
        result = search.run_streams([shard])[shard.key]
        merge.take(merge.ordered_runs([result]))
        dpor = DPOR(plan.preemptions)
        dpor.exhausted = result.exhausted
        extra.update(traces=result.traces, bounded=result.bounded, unfollowed=result.unfollowed,
                     pruned=result.pruned)
        return dpor.describe(), engine._coverage(dpor, merge.stats), result.exhausted, extra
    kind = strategy
    shards = search.streams(kind, plan.seed, plan.depth, plan.budget)
    done = search.run_streams(shards)
    merge.take(_interleaved([done[s.key] for s in shards if s.key in done]))
    sampler: Strategy = RandomWalk(plan.seed) if kind == "random" else PCT(plan.depth, plan.seed)
    described = f"{sampler.describe()}, in {plan.streams} seed streams"
    return described, engine._coverage(sampler, merge.stats), False, extra


def _portfolio(search: _Search) -> tuple[str, str, bool, dict[str, Any]]:
    """The portfolio's phases with the single search's shares: DPOR beside the DFS bounds, then the samplers."""
    plan = search.plan
    merge = search.merge
    budget = plan.budget
    max_bound = 2 if plan.preemptions is None else plan.preemptions
    shape = Portfolio(budget, plan.seed, max_bound)  # the single search's object, for its shares and its texts
    dpor_cap = max(1, int(budget * portfolio_shares.DPOR_SHARE))
    dfs_cap = max(1, int(budget * portfolio_shares.DFS_SHARE))
    pct_each = max(1, int(budget * portfolio_shares.PCT_SHARE / len(portfolio_shares.PCT_DEPTHS)))
    extra: dict[str, Any] = {}
    # DPOR runs in a thread of the parent's own (one shard) while the DFS bounds are split
    dpor_shard = Shard(search._next_key(), "dpor", dpor_cap, stop_on_first=plan.stop_on_first,
                       max_steps=plan.max_steps, deadline=plan.deadline)
    dfs_runs: list[tuple[int, list[ShardResult], bool]] = []
    dpor_runner = search.runner
    if isinstance(dpor_runner, LocalRunner) and dpor_runner.pool is not None:
        dpor_future = dpor_runner.pool.submit(run_shard, dpor_runner.ref, dpor_shard)
        get_dpor: Callable[[], ShardResult] = dpor_future.result
    else:
        get_dpor = lambda: search.run_streams([dpor_shard])[dpor_shard.key]  # noqa: E731
    used = 0
    for bound in range(max_bound + 1):
        if used >= dfs_cap:
            break
        results, complete = search.dfs("dfs", bound, dfs_cap - used)
        ran_here = sum(len(r.runs) for r in results)
        complete = complete and ran_here <= dfs_cap - used
        dfs_runs.append((bound, results, complete))
        used += min(ran_here, dfs_cap - used)
        if not complete or (plan.stop_on_first and any(run[4] for r in results for run in r.runs)):
            break
        if plan.deadline is not None and time.time() >= plan.deadline:
            break
    dpor = get_dpor()
    search._note([dpor])
    ran: dict[str, int] = {}
    kept = merge.take(merge.ordered_runs([dpor]), dpor_cap)
    if kept:
        ran["dpor"] = kept
    shape.systematic = kept
    extra["pruned"] = dpor.pruned
    if dpor.exhausted and not dpor.unfollowed and kept == len(dpor.runs) and not dpor.timed_out:
        shape.dpor_traces = dpor.traces
    dfs_used = 0
    for bound, results, complete in dfs_runs:
        if merge.full:
            break
        kept = merge.take(merge.ordered_runs(results), dfs_cap - dfs_used)
        dfs_used += kept
        if kept:
            ran[f"dfs {bound}"] = kept
        shape.systematic += kept
        if complete and kept == sum(len(r.runs) for r in results):
            shape.exhaustive_bound = bound
    if not merge.full and (plan.deadline is None or time.time() < plan.deadline):
        used = merge.stats.schedules
        phases: list[tuple[str, list[Shard]]] = []
        rank = 1
        for d in portfolio_shares.PCT_DEPTHS:
            cap = min(pct_each, budget - used)
            if cap <= 0:
                break
            phases.append((f"pct {d}", search.streams("pct", plan.seed + d, d, cap, rank)))
            used += cap
            rank += 1
        if budget - used > 0:
            phases.append(("random", search.streams("random", plan.seed, plan.depth, budget - used, rank)))
        done = search.run_streams([s for _, shards in phases for s in shards])
        for label, shards in phases:
            if merge.full:
                break
            kept = merge.take(_interleaved([done[s.key] for s in shards if s.key in done]), pct_each
                              if label != "random" else None)
            if kept:
                ran[label] = kept
            shape.sampled += kept
    shape.ran = ran
    described = f"{shape.describe()}, sampled in {plan.streams} seed streams"
    return described, shape.coverage(), False, extra
