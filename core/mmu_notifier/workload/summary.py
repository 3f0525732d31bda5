"""The run summary: the JSON-ready document of a run, and the table a person reads at a glance.

:func:`document` turns a run's result into one JSON-ready document;
:func:`render` prints it as one table, drivers as rows, then totals.

``alloc`` counts the subscriptions the core received (``alloc_notifier``
results, and subscriptions a driver registered itself, as 5.4 amdkfd does)
and ``freed`` the ``free_notifier`` calls, so on a clean run they are equal; ``attach`` and ``detach`` count the opens
and closes of the device through the exercisers, which mostly share one
subscription per (driver, mm). Drivers left out of the run (broken plugins),
steps that failed because a driver raised, and a run stopped by the watchdog
or Ctrl-C are in the document and on the page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmu_notifier.workload.stats import DriverStats

if TYPE_CHECKING:
    from mmu_notifier.workload.runner import RunResult

COLUMNS = (
    ("driver", 10),
    ("alloc", 6),
    ("freed", 6),
    ("attach", 7),
    ("detach", 7),
    ("peak users", 11),
    ("invalidations", 14),
    ("refused", 8),
    ("releases", 9),
    ("dev faults", 11),
    ("retries", 8),
    ("violations", 10),
)


def _row(name: str, stats: dict[str, Any]) -> str:
    values = (
        name,
        stats["allocated"],
        stats["freed"],
        stats["attaches"],
        stats["detaches"],
        stats["peak_users"],
        sum(stats["invalidations"].values()),
        stats["nonblock_refusals"],
        stats["releases"],
        stats["device_faults"],
        stats["retries"],
        len(stats["violations"]),
    )
    return "  ".join(str(value).rjust(width) if i else str(value).ljust(width)
                     for i, ((_, width), value) in enumerate(zip(COLUMNS, values, strict=True)))


def render(doc: dict[str, Any]) -> str:
    """The summary document of :func:`document` as text."""
    header = "  ".join(title.rjust(width) if i else title.ljust(width) for i, (title, width) in enumerate(COLUMNS))
    lines = [f"workload {doc['workload']!r}, {doc['mode']}, seed {doc['seed']}", ""]
    if doc.get("stopped"):
        lines += [f"STOPPED ({doc['stopped']}): the summary of what ran until then", ""]
    lines += [header, "-" * len(header)]
    lines += [_row(name, stats) for name, stats in doc["drivers"].items()]
    lines += ["-" * len(header), _row("total", doc["totals"]), ""]
    lines.append("invalidations by event type:")
    for name, stats in [*doc["drivers"].items(), ("total", doc["totals"])]:
        events = stats["invalidations"]
        lines.append(f"  {name:<10} " + (", ".join(f"{k} {v}" for k, v in events.items()) or "none"))
    rate = doc["events_per_second"]
    failed = f", {doc['failed_steps']} failed" if doc.get("failed_steps") else ""
    lines.append(
        f"{doc['steps']} steps ({doc['skipped_steps']} skipped{failed}), {doc['callbacks']} driver callbacks, "
        f"{doc['events']} events in {doc['wall_seconds']:.2f} s ({rate:,.0f} events/s)"
    )
    left_out = doc.get("left_out") or {}
    if left_out:
        lines.append(f"LEFT OUT ({len(left_out)} broken driver plugin(s)):")
        lines += [f"  - {name}: {reason}" for name, reason in left_out.items()]
    problems = doc["violations"] + [f"{name}: {v}" for name, s in doc["drivers"].items() for v in s["violations"]]
    if problems:
        lines.append(f"VIOLATIONS ({len(problems)}):")
        lines += [f"  - {problem}" for problem in problems]
    else:
        lines.append("no violations")
    known = [f"{name}: {v}" for name, s in doc["drivers"].items() for v in s.get("known_kernel_behaviour", [])]
    if known:
        lines.append(f"known kernel behaviour, not counted as violations ({len(known)}):")
        lines += [f"  - {entry}" for entry in known]
    for name, stats in doc["drivers"].items():
        for text in stats.get("tracebacks", ()):
            lines.append(f"traceback of {name}'s fault:")
            lines += [f"    {line}" for line in text.rstrip().splitlines()]
    return "\n".join(lines)


def document(result: RunResult) -> dict[str, Any]:
    """A JSON-ready summary document."""
    totals = DriverStats()
    for stats in result.drivers.values():
        totals.subscriptions |= stats.subscriptions
        totals.allocated += stats.allocated
        totals.attaches += stats.attaches
        totals.detaches += stats.detaches
        totals.freed += stats.freed
        totals.peak_users = max(totals.peak_users, stats.peak_users)
        totals.invalidations.update(stats.invalidations)
        totals.refusals += stats.refusals
        totals.releases += stats.releases
        totals.device_faults += stats.device_faults
        totals.retries += stats.retries
        totals.violations += stats.violations
        totals.known += stats.known
    json_totals = totals.to_json()
    json_totals["tracebacks"] = []  # each is shown under its driver
    return {
        "workload": result.workload,
        "mode": result.mode,
        "seed": result.seed,
        "ok": result.ok,
        "drivers": {name: stats.to_json() for name, stats in sorted(result.drivers.items())},
        "totals": json_totals,
        "steps": result.steps,
        "skipped_steps": result.skipped,
        "failed_steps": result.failed_steps,
        "callbacks": result.callbacks,
        "scheduler_steps": result.scheduler_steps,
        "events": result.events,
        "wall_seconds": round(result.wall, 4),
        "events_per_second": round(result.events / result.wall, 1) if result.wall else None,
        "violations": result.violations,
        "left_out": dict(result.left_out or {}),
        "stopped": result.stopped,
    }
