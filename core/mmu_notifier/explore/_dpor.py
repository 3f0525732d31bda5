"""Optimal dynamic partial-order reduction: one execution per Mazurkiewicz trace, every trace.

The algorithm is optimal DPOR with wakeup trees and sleep sets (Abdulla,
Aronis, Jonsson and Sagonas, "Optimal dynamic partial order reduction",
POPL 2014), run statelessly: every execution rebuilds the scenario and
replays a prefix of recorded decisions, then follows the wakeup tree of the
node where it diverges, then goes on with the running thread. At the end of
an execution the races of its new steps are found from the happens-before
relation (vector clocks over the dependency relation below); for each race
``e < e'`` the sequence ``notdep(e).e'`` (the steps between them that do not
depend on ``e``, then ``e'``) is inserted in the wakeup tree of the node
before ``e``, unless a sleeping thread is among its weak initials (then an
equivalent execution was explored already). The search then backtracks to
the deepest node whose wakeup tree has a branch left. Each explored
execution is a different Mazurkiewicz trace and none is sleep-set blocked
(the strategy counts both and the tests check them).

An optional preemption bound prunes branches that would exceed it; the
result is then reported as bounded, not as a proof.

The dependency relation (the one place it is defined)
======================================================

A *step* is what a thread does from one scheduling point to the next (see
:mod:`._scheduler`); the scheduler records for every step what it did to
which object, and :func:`event` turns that into *accesses*: for each object
(primitives are named by their creator, so names agree across executions) a
set of modes among ``W`` (changes its state), ``R`` (reads it), ``WAIT``
(may go to sleep on it) and ``WAKE`` (woke its waiters). Two steps of
different threads are **dependent** when

* either is *global*: ``yield_now`` (the model's marker for unsynchronised
  shared data), a wait on a wait queue (its condition reads arbitrary
  state), a timed wait that expired (it fires only when no thread can run),
  or an unknown op on no resource;
* or one is an *SRCU reader* (a step starting at ``srcu_read_lock`` or at a
  list-walk element: it reads the notifier list) and the other held a lock
  when it started or takes one (lists change inside lock critical sections);
* or they access a common object in conflicting modes: ``W`` conflicts with
  ``W``, ``R`` and ``WAIT``; ``WAIT`` with ``WAKE`` as well; ``R``/``R``,
  ``WAKE``/``WAKE``, ``WAIT``/``WAIT`` and ``W``/``WAKE`` commute.

The modes of a step:

* the op it starts with (its *label*): lock and trylock ``W``; ``down_read``
  ``R``, ``down_write`` ``W``; ``wait_for_completion`` ``W`` (it consumes a
  ``complete``); ``atomic_read`` ``R``, other atomics ``W``; a list-walk
  element ``R`` on the one name :data:`SUBSCRIPTIONS`; a thread's first step,
  and a step that starts after a release, nothing (the release belonged to
  the step before);
* an SRCU op uses parts of the domain (:data:`SRCU_MODES`): readers entering
  (``srcu_read_lock`` ``R``; the snapshot of ``synchronize_srcu`` and
  ``call_srcu`` ``W``), readers leaving (``srcu_read_unlock`` ``R``; a
  grace-period check ``W``), the callback queue and the counts of callbacks
  queued and done (``srcu_barrier`` reads them). So readers commute with each
  other, and a reader entering after a grace period's snapshot with the
  grace-period check;
* a wait that may go to sleep in its step (``down_write``, which announces
  itself to readers, and the SRCU waits: :data:`BLOCKING`) is ``WAIT`` too,
  whether it slept or not (a step's accesses must not depend on how it
  turned out); a waiter's retry is ``WAIT`` as well, so it follows every wake
  before it;
* the point it ends at, if that is a release: ``mutex_unlock``,
  ``spin_unlock``, ``up_write``, ``complete``, ``wake_up`` ``W``;
  ``up_read`` and ``srcu_read_unlock`` ``R``;
* every wake ``WAKE``; every change without a point (``Backend.touch``)
  ``W``: ``downgrade_write``, ``reinit_completion``, an SRCU callback done
  (the worker then looks at the queue), and a free of a subscription
  (``notifier.poison``: ``W`` on :data:`SUBSCRIPTIONS`, so every walk meets
  every free); a thread spawn ``W`` on the thread table (spawns are ordered,
  so the threads, numbered by spawn name and rank, agree across executions).

A spawned thread's first step also happens after the step that spawned it;
the finale's after the last step of every scenario thread.

**Assumptions** (the model's conventions; a scenario that breaks them can
lose traces, and shows it when a planned step cannot run): model code
touches shared state only in steps that access the object guarding it
(inside its lock's critical section, or at a point on the atomic,
completion or SRCU domain), and marks any other shared access with
``sync.yield_now()``; lock-free readers of the notifier lists are SRCU
readers and walkers; an object a walker can reach is freed through
``notifier.poison`` (directly or with the subscription it embeds); a wait's
condition on a mutex, rw-semaphore, completion or SRCU domain reads only
that primitive; whoever makes a waiter's condition true wakes its resource
(otherwise the waiter is a lost wake-up); scenarios are deterministic. Not
covered: the lock-free ``mm.mmu_notifier_mm`` check before an invalidation
(a walker that finds no container does not race with its creation).

Blocking and waking
===================

* *Lazy waits* (``lazy_waits``): a wait on a mutex, a spinlock, the read
  side of an rw-semaphore or a completion changes nothing, so the scheduler
  does not offer the thread until it can get through; such a wait is never a
  step and no step disables another by taking the lock first. Its race with
  the step that took the lock before it hides behind that step's critical
  section and release, so a lazy wait also races with every earlier
  conflicting step on its primitive that only the primitive (not its own
  thread's past) orders before it; such a race is reversed only where the
  primitive was passable (recorded at every step's start).
* The other waits are a step that may go to sleep (``WAIT``); the sleeper
  becomes runnable again only through a wake of that resource (``WAKE``,
  dependent), and its retry is a step of its own that either gets through or
  sleeps again (``retry_steps``), so no step disables another. A race whose
  later step is a retry is reversed only if a wake other than the earlier
  step lets it through.
* A thread's first step is never moved before its spawn; an expired timeout
  is never moved. A run where every thread is parked or asleep is a
  deadlock, found as by every strategy.
* A reported schedule is for the default scheduler: failed retries are left
  out (it re-checks a woken waiter's condition without a step) and a thread
  parked at a lazy wait when a deadlock ends the run gets its (sleeping)
  attempt.
"""

from __future__ import annotations

from mmu_notifier.explore._findings import Problem
from mmu_notifier.explore._lockdep import ACQUIRE_OPS
from mmu_notifier.explore._scheduler import LAZY_WAITS, RUN, Execution, ModelThread, Outcome, StepRecord
from mmu_notifier.explore._strategies import PrefixSearch

W, R, WAIT, WAKE = 1, 2, 4, 8

#: mode of the op a step starts with, on the op's resource
LABEL_MODE: dict[str, int] = {
    "mutex_lock": W,
    "spin_lock": W,
    "mutex_trylock": W,
    "spin_trylock": W,
    "down_read": R,
    "down_read_trylock": R,
    "down_write": W,
    "down_write_trylock": W,
    "wait_for_completion": W,
    "atomic_read": R,
    "atomic_add": W,
    "atomic_inc_not_zero": W,
    "srcu_read_lock": R,
    "synchronize_srcu": W,
    "call_srcu": W,
    "srcu_barrier": W,
    "srcu_gp": W,
}
#: ops whose point comes after a release: the release's mode goes to the step that ends there
RELEASE_MODE: dict[str, int] = {
    "mutex_unlock": W,
    "spin_unlock": W,
    "up_read": R,
    "up_write": W,
    "srcu_read_unlock": R,
    "complete": W,
    "wake_up": W,
}
#: waits that may go to sleep in a step (the lazy waits never do): such a step is ``WAIT`` on the
#: resource whether it slept or not, so a step's accesses do not depend on how it turned out
BLOCKING = frozenset({"down_write", "synchronize_srcu", "srcu_barrier", "srcu_gp"})
#: SRCU ops, on the parts of the domain they use (waits and wakes are on the domain itself):
#: ``enter`` (readers take tickets: a grace period's snapshot of the ticket counter orders them),
#: ``leave`` (readers leave: what a grace-period check reads), the callback ``queue``, the count
#: of callbacks ``queued`` and of callbacks ``done``. Readers entering or leaving commute with
#: each other; a reader entering after a snapshot never holds that grace period up.
SRCU_MODES: dict[str, tuple[tuple[str, int], ...]] = {
    "srcu_read_lock": (("enter", R),),
    "srcu_read_unlock": (("leave", R),),
    "synchronize_srcu": (("enter", W), ("leave", W)),
    "call_srcu": (("enter", W), ("queue", W), ("queued", W)),
    "srcu_barrier": (("queued", R), ("done", R)),
    "srcu_gp": (("leave", W), ("queue", W)),
    "srcu_callback_done": (("done", W), ("queue", W)),  # the worker then looks at the queue (and may exit)
}
#: what every list-walk element reads and every free of a subscription writes: one name for all
#: of them (a subscription is no primitive, so it has no name that agrees across executions)
SUBSCRIPTIONS = ("subscriptions",)
#: ops that start a step touching nothing (a thread's first step)
LOCAL_OPS = frozenset({"start"})
#: ops whose step may touch state no access names: dependent on every step
GLOBAL_OPS = frozenset({"yield", "wait_event"})
#: ops that read the notifier lists without a lock (RCU readers)
RCU_OPS = frozenset({"srcu_read_lock", "walk"})
#: ops that take a lock (the step then runs inside a critical section)
LOCKING_OPS = ACQUIRE_OPS | {"mutex_trylock", "spin_trylock", "down_read_trylock", "down_write_trylock"}
#: the object every spawn writes
THREAD_TABLE = ("threads",)


def _conflict(a: int, b: int) -> bool:
    if (a & W and b & (W | R | WAIT)) or (b & W and a & (W | R | WAIT)):
        return True
    return bool((a & WAIT and b & WAKE) or (b & WAIT and a & WAKE))


_CONFLICT = [[_conflict(a, b) for b in range(16)] for a in range(16)]


class Event:
    """One step as the reduction sees it: its thread, label and accesses."""

    __slots__ = (
        "thread",
        "op",
        "key",
        "acc",
        "glob",
        "rcu",
        "locked",
        "parents",
        "retry_of",
        "failed",
        "timeout",
        "lazy",
        "before",
        "pos",
    )

    def __init__(self, thread: int, op: str, key: object, pos: int) -> None:
        self.thread = thread
        self.op = op
        self.key = key
        self.pos = pos
        self.acc: dict[object, int] = {}
        self.glob = False
        self.rcu = False
        self.locked = False
        self.parents: tuple[int, ...] = ()
        self.retry_of = -1
        self.failed = False
        self.timeout = False
        #: a wait that was not offered until it could get through (``lazy_waits``)
        self.lazy = False
        #: whether such a wait on each known primitive would have got through when the step started
        self.before: dict[object, bool] = {}

    def __repr__(self) -> str:
        return f"<Event {self.pos} t{self.thread} {self.op} {self.acc}{' global' if self.glob else ''}>"


def _add(acc: dict[object, int], op: str, key: object, mode: int) -> None:
    """Add ``mode`` on ``key`` for ``op``; an SRCU op uses its parts of the domain instead (WAIT/WAKE stay)."""
    parts = SRCU_MODES.get(op)
    if parts is not None and mode & (W | R):
        for part, pmode in parts:
            k = (key, part)
            acc[k] = acc.get(k, 0) | pmode
        mode &= WAIT | WAKE
        if not mode:
            return
    acc[key] = acc.get(key, 0) | mode


def event(thread: int, rec: StepRecord, pos: int) -> Event:
    """Interpret a step's recorded facts as accesses (the rules in the module docstring)."""
    _, op, key = rec.facts[0]
    ev = Event(thread, op, key, pos)
    acc = ev.acc
    ev.parents = rec.parents
    ev.retry_of = rec.retry_of
    ev.failed = rec.failed
    ev.timeout = rec.timeout
    ev.lazy = op in LAZY_WAITS and rec.retry_of < 0
    ev.before = rec.before
    ev.locked = rec.locked or op in LOCKING_OPS
    ev.rcu = op in RCU_OPS
    glob = op in GLOBAL_OPS or rec.timeout or (key is None and op not in LOCAL_OPS)
    if op == "walk":
        acc[SUBSCRIPTIONS] = R
    elif op in LABEL_MODE:
        _add(acc, op, key, LABEL_MODE[op] | (WAIT if op in BLOCKING else 0))
    elif op not in LOCAL_OPS and op not in RELEASE_MODE and key is not None:
        acc[key] = W  # an op these rules do not know: conservatively a change
    if rec.retry_of >= 0 and key is not None:
        acc[key] = acc.get(key, 0) | WAIT
    for kind, fop, k in rec.facts[1:]:
        if kind == "check" or kind == "block":
            if fop in GLOBAL_OPS:
                glob = True
            else:
                wait = WAIT if fop in BLOCKING or kind == "block" else 0
                _add(acc, fop, k, LABEL_MODE.get(fop, W) | wait)
        elif kind == "wake":
            acc[k] = acc.get(k, 0) | WAKE
        elif kind == "touch":
            if fop == "kfree":
                acc[SUBSCRIPTIONS] = acc.get(SUBSCRIPTIONS, 0) | W
            else:
                _add(acc, fop, k, W)
        elif kind == "end":
            if fop in RELEASE_MODE:
                _add(acc, fop, k, RELEASE_MODE[fop])
        elif kind == "spawn":
            acc[THREAD_TABLE] = acc.get(THREAD_TABLE, 0) | W
    ev.glob = glob
    return ev


def dependent(a: Event, b: Event, but: object = ()) -> bool:
    """True unless the two steps (of different threads) commute; ``but``: a key to leave out."""
    if a.glob or b.glob:
        return True
    if (a.rcu and b.locked) or (b.rcu and a.locked):
        return True
    other = b.acc
    for k, m in a.acc.items():
        n = other.get(k)
        if n and _CONFLICT[m][n] and k != but:
            return True
    return False


class _WuT:
    """A wakeup tree node: ordered children, each a step and the subtree after it."""

    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: list[tuple[Event, _WuT]] = []


class _Node:
    """One position of the current execution: the decision, its sleep set and its wakeup tree."""

    __slots__ = ("cands", "current", "preemptions", "sleep", "wut", "chosen", "child", "event")

    def __init__(self, cands: tuple[int, ...], current: int, preemptions: int, sleep: dict[int, Event]) -> None:
        self.cands = cands
        self.current = current
        self.preemptions = preemptions
        self.sleep = sleep
        self.wut = _WuT()
        self.chosen = -1
        #: the wakeup subtree the chosen branch goes on with (empty: free choice)
        self.child: _WuT | None = None
        self.event: Event | None = None


def _weak_initial(q: int, eq: Event, v: list[Event]) -> bool:
    """Whether thread ``q`` (next step ``eq``) can start an execution equivalent to one starting with ``v``."""
    for k, e in enumerate(v):
        if e.thread == q:
            before = v[:k]
            if e.parents and any(x.pos in e.parents for x in before):
                return False
            return not any(dependent(x, e) for x in before)
    return not any(dependent(eq, e) for e in v)


def _remove_first(v: list[Event], q: int) -> list[Event]:
    for k, e in enumerate(v):
        if e.thread == q:
            return v[:k] + v[k + 1 :]
    return v


def _insert(wut: _WuT, v: list[Event]) -> bool:
    """Insert ``v`` in the wakeup tree unless a branch covers it; True if inserted."""
    node = wut
    while True:
        for ev, sub in node.children:
            if _weak_initial(ev.thread, ev, v):
                v = _remove_first(v, ev.thread)
                node = sub
                if not node.children or not v:
                    return False
                break
        else:
            for e in v:
                nxt = _WuT()
                node.children.append((e, nxt))
                node = nxt
            return True


class DPOR(PrefixSearch[_Node]):
    """Optimal DPOR with wakeup trees and sleep sets; ``preemptions`` bounds it (None: unbounded)."""

    name = "dpor"
    always = True
    retry_steps = True
    lazy_waits = True
    run_past_failures = True
    records = True

    def __init__(self, preemptions: int | None = None, keep_traces: bool = False) -> None:
        if preemptions is not None and preemptions < 0:
            raise ValueError(f"preemption bound must be >= 0, got {preemptions}")
        super().__init__()
        self.bound = preemptions
        self._preempt = 0
        self._first_new = 0
        #: complete executions explored (each a different trace)
        self.traces = 0
        #: executions abandoned because every runnable thread slept (optimal DPOR has none)
        self.sleep_blocked = 0
        #: wakeup-tree steps whose thread could not run when followed (a broken assumption; none expected)
        self.unexecutable = 0
        #: branches the preemption bound cut off
        self.bound_pruned = 0
        #: canonical form of every explored trace (``keep_traces``), for tests
        self.keep_traces = keep_traces
        self.canonical: list[object] = []
        self._events: list[Event] = []
        self._clocks: list[list[int]] = []
        # threads by (spawn name, how many of that name came before): numbers that agree across executions
        self._tids: dict[tuple[str, int], int] = {}
        self._of: list[int] = []

    def _tid(self, threads: list[ModelThread]) -> list[int]:
        """The reduction's thread numbers of an execution's threads (extends ``self._of`` as threads appear)."""
        of = self._of
        if len(of) < len(threads):
            seen: dict[str, int] = {}
            for t in threads[: len(of)]:
                seen[t.base] = seen.get(t.base, 0) + 1
            for t in threads[len(of) :]:
                n = seen.get(t.base, 0)
                seen[t.base] = n + 1
                of.append(self._tids.setdefault((t.base, n), len(self._tids)))
        return of

    @property
    def bounded(self) -> bool:
        """True when the preemption bound cut anything off (the search is then no proof)."""
        return self.bound_pruned > 0

    def start(self) -> bool:
        self._preempt = 0
        self._of = []
        return not self.exhausted and self.nondeterminism is None

    # -- choosing ------------------------------------------------------------
    def _cost(self, node: _Node, p: int) -> int:
        return node.preemptions + (1 if node.current >= 0 and p != node.current else 0)

    def _allowed(self, node: _Node, p: int) -> bool:
        return self.bound is None or self._cost(node, p) <= self.bound

    def choose(
        self, cands: list[ModelThread], current: ModelThread | None, ex: Execution
    ) -> ModelThread | None:
        of = self._tid(ex.threads)
        ids = tuple(of[t.idx] for t in cands)
        node = self._decide(len(ex.trace), ids, lambda: self._new_node(ids, current, ex))
        if node is None:
            return None
        self._preempt = self._cost(node, node.chosen)
        return self._thread(cands, node.chosen, of)

    def _new_node(self, ids: tuple[int, ...], current: ModelThread | None, ex: Execution) -> _Node | None:
        stack = self._stack
        depth = len(stack)
        sleep: dict[int, Event] = {}
        sub: _WuT | None = None
        if depth:
            parent = stack[-1]
            records = ex.records
            done = event(self._of[ex.trace[-1][0]], records[-1], depth - 1)
            parent.event = done
            sleep = {q: e for q, e in parent.sleep.items() if not dependent(e, done)}
            sub = parent.child
        cur = self._of[current.idx] if current is not None else -1
        cur = cur if cur in ids else -1
        node = _Node(ids, cur, self._preempt, sleep)
        if sub is not None and sub.children:
            node.wut = sub
            while sub.children:
                ev = sub.children[0][0]
                if ev.thread not in ids:
                    self.unexecutable += 1
                    return None
                if self._allowed(node, ev.thread):
                    break
                self.bound_pruned += 1
                sub.children.pop(0)
            if not sub.children:
                return None
            ev, node.child = sub.children[0]
            node.chosen = ev.thread
        else:
            order = (cur, *(c for c in ids if c != cur)) if cur >= 0 else ids
            free = [p for p in order if p not in sleep]
            if not free:
                self.sleep_blocked += 1
                return None
            allowed = [p for p in free if self._allowed(node, p)]
            if not allowed:
                self.bound_pruned += 1
                return None
            node.chosen = allowed[0]
            node.child = _WuT()
            # the step is recorded when it has run; a placeholder keeps the branch in the tree
            node.wut.children.append((Event(node.chosen, "", None, depth), node.child))
        stack.append(node)
        return node

    # -- after an execution ----------------------------------------------------
    def finish(self, outcome: Outcome) -> None:
        records = outcome.records or []
        trace = outcome.trace
        stack = self._stack
        if len(stack) < len(trace) or len(records) != len(trace):
            self.nondeterminism = self.nondeterminism or "an execution went on past the decisions recorded for it"
            self.exhausted = True
            return
        of = self._tid(outcome.threads)
        # a replayed or already interpreted step keeps its event (the same step as before)
        events = [
            stack[i].event or event(of[t], records[i], i)
            for i, (t, _, _) in enumerate(trace)
        ]
        self._events = events
        for i, ev in enumerate(events):
            node = stack[i]
            node.event = ev
            # the branch taken holds the step as it ran (a reversed race's step may have turned out otherwise)
            for k, (_, sub) in enumerate(node.wut.children):
                if sub is node.child:
                    node.wut.children[k] = (ev, sub)
        if outcome.status != "aborted":
            self.traces += 1
        else:
            self.pruned += 1
        clocks = self._happens_before(events, len(self._tids))
        self._clocks = clocks
        if self.keep_traces and outcome.status != "aborted":
            self.canonical.append(self._canonical(events, clocks))
        if self.nondeterminism is None:
            self._races(events, clocks)
        self._backtrack(len(trace))

    def _happens_before(self, events: list[Event], nthreads: int) -> list[list[int]]:
        """Vector clocks; while at it, the races of new steps are noted in ``self._found``."""
        clocks: list[list[int]] = []
        last: dict[int, int] = {}
        count = [0] * nthreads
        found: list[tuple[int, int]] = []
        first_new = self._first_new
        for j, e in enumerate(events):
            t = e.thread
            c = list(clocks[last[t]]) if t in last else [0] * nthreads
            for p in e.parents:
                if p < j:
                    _merge(c, clocks[p])
            base = list(c) if e.lazy and j >= first_new else None
            for i in range(j - 1, -1, -1):
                ei = events[i]
                ti = ei.thread
                if ti == t or c[ti] >= clocks[i][ti]:
                    continue
                if dependent(ei, e):
                    _merge(c, clocks[i])
                    if j >= first_new:
                        found.append((i, j))
            if base is not None:
                self._lazy_races(j, e, events, clocks, base, found)
            count[t] += 1
            c[t] = count[t]
            clocks.append(c)
            last[t] = j
        self._found = found
        return clocks

    @staticmethod
    def _lazy_races(
        j: int, e: Event, events: list[Event], clocks: list[list[int]], base: list[int], found: list[tuple[int, int]]
    ) -> None:
        """Races of a lazy wait with earlier steps on its primitive that only the primitive orders before it.

        A wait that could not get through was no step, so its race with the
        step that took the lock (or consumed the completion) before it hides
        behind the release and the critical section in between. ``base`` is
        what the wait's own thread (and its creation) orders before it: every
        earlier conflicting step on the primitive outside it is a race,
        reversible if the wait could get through just before it.
        """
        key, t = e.key, e.thread
        mode = e.acc.get(key, 0)
        for i in range(j - 1, -1, -1):
            ei = events[i]
            m = ei.acc.get(key)
            if not m or ei.thread == t or not _CONFLICT[m][mode]:
                continue
            if base[ei.thread] >= clocks[i][ei.thread] or (i, j) in found:
                continue
            found.append((i, j))

    def _races(self, events: list[Event], clocks: list[list[int]]) -> None:
        stack = self._stack
        for i, j in self._found:
            ej = events[j]
            if not self._reversible(i, j, events, clocks):
                continue
            ti, own = events[i].thread, clocks[i][events[i].thread]
            v = [events[k] for k in range(i + 1, j) if clocks[k][ti] < own]
            v.append(ej)
            node = stack[i]
            if any(_weak_initial(q, eq, v) for q, eq in node.sleep.items()):
                continue
            _insert(node.wut, v)

    @staticmethod
    def _reversible(i: int, j: int, events: list[Event], clocks: list[list[int]]) -> bool:
        """Whether ``events[j]`` can run before ``events[i]`` (it does not need ``i`` to be runnable)."""
        ej = events[j]
        if ej.timeout:  # it fired because no thread could run
            return False
        if ej.retry_of >= 0:
            key = ej.key
            return any(k != i and events[k].acc.get(key, 0) & WAKE for k in range(ej.retry_of + 1, j))
        if ej.lazy:
            # the primitive's state where the wait would run: before the first change of it left out
            key, ti, own = ej.key, events[i].thread, clocks[i][events[i].thread]
            for k in range(i, j):
                ek = events[k]
                if ek.acc.get(key, 0) & W and clocks[k][ti] >= own:
                    return ek.before.get(key, False)
        return True

    def _backtrack(self, executed: int) -> None:
        stack = self._stack
        del stack[executed:]
        while stack:
            node = stack[-1]
            if node.event is not None:
                node.sleep[node.chosen] = node.event
            node.wut.children = [c for c in node.wut.children if c[1] is not node.child]
            while node.wut.children and not self._allowed(node, node.wut.children[0][0].thread):
                node.wut.children.pop(0)
                self.bound_pruned += 1
            if node.wut.children:
                ev, node.child = node.wut.children[0]
                node.chosen = ev.thread
                node.event = None
                self._first_new = len(stack) - 1
                return
            stack.pop()
        self.exhausted = True

    # -- reports ------------------------------------------------------------------
    @staticmethod
    def _canonical(events: list[Event], clocks: list[list[int]]) -> object:
        """The trace of an execution: each thread's steps, and the order of every dependent pair."""
        nth: list[tuple[int, int]] = []
        seen: dict[int, int] = {}
        for e in events:
            seen[e.thread] = seen.get(e.thread, 0) + 1
            nth.append((e.thread, seen[e.thread]))
        steps = tuple(sorted((nth[k], e.op, repr(sorted(e.acc.items(), key=repr))) for k, e in enumerate(events)))
        order = frozenset(
            (nth[i], nth[j])
            for j, e in enumerate(events)
            for i in range(j)
            if events[i].thread != e.thread and dependent(events[i], e)
        )
        return steps, order

    def report(self, outcome: Outcome) -> list[tuple[Problem, tuple[int, ...] | None]]:
        """The findings of the last execution, each with a schedule the default scheduler replays.

        A problem raised in step ``s`` is shown by the steps that happen before
        ``s`` (in execution order, failed retries left out: the default
        scheduler re-checks a woken waiter's condition without a step); one
        that needs another real problem before it is left to the execution
        where it comes first. Deadlocks, failed checks and predicted problems
        take the whole execution.
        """
        events, clocks = self._events, self._clocks
        n = len(events)
        # a thread parked at a lazy wait when the run ended tries it and sleeps in the default scheduler
        parked = tuple(t.idx for t in outcome.threads if t.state == RUN and t.op in LAZY_WAITS)
        trace = outcome.trace
        everything = tuple(trace[k][0] for k, e in enumerate(events) if not e.failed) + parked
        real = list(outcome.problems)
        out: list[tuple[Problem, tuple[int, ...] | None]] = []
        steps_of = [p.step if p.thread is not None and 0 <= p.step < n else n for p in real]
        for p, s in zip(real, steps_of, strict=True):
            if s >= n:
                if len(real) == 1:
                    out.append((p, everything))
                continue
            closure = [k for k in range(s + 1) if clocks[s][events[k].thread] >= clocks[k][events[k].thread]]
            if any(s2 != s and s2 in closure for s2 in steps_of):
                continue
            out.append((p, tuple(trace[k][0] for k in closure if not events[k].failed)))
        if outcome.predicted is not None and not real:
            out.append((outcome.predicted, everything))
        return out

    def describe(self) -> str:
        bound = "unbounded" if self.bound is None else f"preemption bound {self.bound}"
        return f"dpor (optimal, wakeup trees and sleep sets, {bound})"


def _merge(into: list[int], other: list[int]) -> None:
    for k, x in enumerate(other):
        if x > into[k]:
            into[k] = x
