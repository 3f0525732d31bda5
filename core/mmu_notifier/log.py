"""Structured logging: stable event names, silent by default, JSON on request.

Models the kernel's tracepoints. Hot paths guard every emission with the
module-level :data:`LOG` object's ``on`` flag, which costs one attribute read
when logging is off::

    if LOG.on:
        LOG.event("notifier.get", mm=mm.id, driver=ops.name, users=sub.users)

``LOG.event`` calls a concrete structlog logger bound once in :func:`configure`
(not the lazy proxy ``structlog.get_logger()`` returns, which costs
microseconds per call).
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

from mmu_notifier.errors import ParameterError

#: Every event name the core emits, with what it means. Plugins emit their own
#: events through the same :data:`LOG`, named ``<driver>.<what>`` (``gru.dropin``).
EVENTS: dict[str, str] = {
    "mm.create": "an address space was created",
    "mm.exit": "the last mm_users reference went: release, then unmap of everything",
    "mm.free": "the last mm_count reference went: the mm_struct is gone",
    "notifier.alloc": "get called the driver's alloc_notifier",
    "notifier.register": "a subscription was linked on an mm",
    "notifier.get": "get found the live subscription and counted a user",
    "notifier.put": "put dropped a user",
    "notifier.unlink": "a subscription was unlinked (last put, unregister or teardown)",
    "notifier.free": "free_notifier ran after the grace period",
    "notifier.release": "a subscription's release callback ran",
    "notifier.unregister": "unregister finished: no callback is running or will run",
    "notifier.synchronize": "synchronize returned: every pending free has run",
    "invalidate.start": "an invalidation range was announced",
    "invalidate.refused": "a driver refused a non-blockable range (-EAGAIN)",
    "invalidate.end": "an invalidation range ended",
    "kernel.warn": "a rule was broken where the kernel WARNs and carries on",
}


class EventLog:
    """The switch and the bound logger behind :data:`LOG`."""

    __slots__ = ("on", "_logger")

    def __init__(self) -> None:
        self.on = False
        self._logger: Any = None

    def event(self, name: str, **fields: Any) -> None:
        """Emit ``name`` with ``fields``; call only behind ``if LOG.on``."""
        self._logger.info(name, **fields)


LOG = EventLog()


def add_thread_and_step(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the model task that emitted the event and, under the explorer, its step.

    So a log lines up with a timeline: ``thread`` is the timeline's lane,
    ``step`` its step number (absent outside the deterministic scheduler).
    """
    from mmu_notifier import sync  # here, not at import: sync's own imports stay free of logging

    event.setdefault("thread", sync.current().name)
    step = sync.backend().step()
    if step is not None:
        event.setdefault("step", step)
    return event


def configure(fmt: str | None = "json", stream: TextIO | None = None) -> None:
    """Turn logging on (``"json"`` or ``"console"``) or off (``None``)."""
    if fmt is None:
        LOG.on = False
        LOG._logger = None
        return
    if fmt not in ("json", "console"):
        raise ParameterError(f"log format {fmt!r}: expected 'json' or 'console'")
    import structlog  # only when logging is turned on: a silent run never imports it

    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    LOG._logger = structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stderr),
        processors=[
            structlog.processors.add_log_level,
            add_thread_and_step,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.BoundLogger,
    ).bind()
    LOG.on = True
