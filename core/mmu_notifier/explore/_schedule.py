"""Schedule strings: a compact, versioned, copy-pasteable record of one interleaving.

Format (``mx2`` is the format version)::

    mx2:<source>:<scenario>:<scenario fingerprint>:<trace fingerprint>:<steps>

``<source>`` says where the scenario comes from, so the string alone finds it:
``builtin``, ``plugin``, ``conformance``, ``registered`` (defined in code: only
the process that registered it can replay it), ``code`` (not known) or
``file=<path>`` (a scenario file, the path percent-encoded so it holds no
colon or space). Strings of the previous version,
``mx1:<scenario>:<fp>:<fp>:<steps>``, still parse (``source`` is ``None``):
the scenario is then looked up by name.

``<steps>`` lists the thread of every step, run-length encoded: thread 0 is
``a``, thread 1 ``b`` ... (then ``A``-``Z``), each optionally followed by a
repeat count, so ``a5b2a`` is five steps of thread 0, two of thread 1, one of
thread 0. Every character is shell-safe.

The scenario fingerprint covers the scenario's name, version and thread names;
the trace fingerprint covers the (thread, op, resource kind) of every step. A
replay that follows the steps but meets a different fingerprint reports the
schedule *stale* (the scenario or the primitive sequence changed) rather than
claiming to reproduce something it did not.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

try:  # hashlib's blake2b is this one; importing hashlib would load OpenSSL's module for nothing
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter without the built-in module
    from hashlib import blake2b

from mmu_notifier.explore._describe import kind

VERSION = "mx2"
#: the older version that still parses (no source field)
OLD_VERSIONS = ("mx1",)
_SOURCE = re.compile(r"builtin|plugin|conformance|registered|code|file=[A-Za-z0-9_.\-/~+%]+")
_LETTERS = string.ascii_lowercase + string.ascii_uppercase
_INDEX = {c: i for i, c in enumerate(_LETTERS)}
_RUN = re.compile(r"([a-zA-Z])(\d*)")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
#: the longest schedule a string may describe, in steps: checked before any step list is built,
#: so a count like ``a99999999999`` is refused instead of allocated
MAX_SCHEDULE_STEPS = 5_000_000


class ReplayError(Exception):
    """A schedule cannot be replayed as recorded."""


class ScheduleFormatError(ReplayError):
    """The text is not a schedule string of a version this explorer reads."""


class StaleScheduleError(ReplayError):
    """The schedule was recorded against a different scenario or primitive sequence."""


class DivergenceError(ReplayError):
    """The replayed execution could not follow the schedule (a step's thread was not runnable)."""


def fingerprint(parts: Iterable[object]) -> str:
    """Eight hex digits identifying ``parts`` (stable across processes and platforms)."""
    h = blake2b(digest_size=4)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x1f")
    return h.hexdigest()


def scenario_fingerprint(name: str, version: int, thread_names: Sequence[str]) -> str:
    """The fingerprint of a scenario as its schedules record it."""
    return fingerprint([name, version, *thread_names])


def trace_fingerprint(trace: Sequence[tuple[int, str, object]]) -> str:
    """The fingerprint of a trace's (thread, op, resource kind) sequence."""
    return fingerprint(f"{t}/{op}/{kind(res)}" for t, op, res in trace)


def encode_steps(steps: Sequence[int]) -> str:
    """Run-length encode thread indices: ``[0, 0, 1]`` -> ``a2b``."""
    out: list[str] = []
    i, n = 0, len(steps)
    while i < n:
        t = steps[i]
        j = i + 1
        while j < n and steps[j] == t:
            j += 1
        if t >= len(_LETTERS):
            raise ValueError(
                f"thread index {t} does not fit a schedule string (at most {len(_LETTERS)} threads)"
            )
        out.append(_LETTERS[t] if j - i == 1 else f"{_LETTERS[t]}{j - i}")
        i = j
    return "".join(out)


def decode_steps(text: str) -> tuple[int, ...]:
    """Inverse of :func:`encode_steps`; raises :class:`ScheduleFormatError`."""
    steps: list[int] = []
    pos = 0
    for m in _RUN.finditer(text):
        if m.start() != pos:
            break
        if len(m.group(2)) > len(str(MAX_SCHEDULE_STEPS)):
            raise ScheduleFormatError(f"step run {m.group(0)[:20]!r} is longer than {MAX_SCHEDULE_STEPS} steps")
        count = int(m.group(2)) if m.group(2) else 1
        if count < 1:
            raise ScheduleFormatError(f"step run {m.group(0)!r} has a zero count")
        if len(steps) + count > MAX_SCHEDULE_STEPS:
            raise ScheduleFormatError(f"the schedule is longer than {MAX_SCHEDULE_STEPS} steps")
        steps.extend([_INDEX[m.group(1)]] * count)
        pos = m.end()
    if pos != len(text):
        raise ScheduleFormatError(f"bad step text at position {pos}: {text[pos : pos + 10]!r}")
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule string."""

    scenario: str
    scenario_fp: str
    trace_fp: str
    steps: tuple[int, ...]
    #: where the scenario comes from (see the module docstring); ``None`` for an ``mx1`` string
    source: str | None = "code"

    def __str__(self) -> str:
        source = self.source or "code"
        return f"{VERSION}:{source}:{self.scenario}:{self.scenario_fp}:{self.trace_fp}:{encode_steps(self.steps)}"

    @property
    def file(self) -> str | None:
        """The scenario file's path for a ``file=`` source, else ``None``."""
        if self.source and self.source.startswith("file="):
            return unquote(self.source[len("file=") :])
        return None

    @staticmethod
    def file_source(path: str) -> str:
        """The ``file=`` source naming ``path`` (percent-encoded: no colon, space or quote)."""
        return "file=" + quote(path, safe="/._-~+")

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Read a schedule string (``mx2``, or the older ``mx1``); raises :class:`ScheduleFormatError`."""
        parts = text.strip().split(":")
        version = parts[0]
        source: str | None = None
        if version == VERSION:
            if len(parts) != 6:
                raise ScheduleFormatError(
                    f"expected {VERSION}:SOURCE:SCENARIO:FP:FP:STEPS, got {len(parts)} colon-separated fields"
                )
            source = parts.pop(1)
            if not _SOURCE.fullmatch(source):
                raise ScheduleFormatError(
                    f"bad scenario source {source!r} (builtin, plugin, conformance, registered, code or file=PATH)"
                )
        elif version in OLD_VERSIONS:
            if len(parts) != 5:
                raise ScheduleFormatError(
                    f"expected {version}:SCENARIO:FP:FP:STEPS, got {len(parts)} colon-separated fields"
                )
        else:
            raise ScheduleFormatError(f"schedule format {version!r} is not {VERSION!r} (nor {', '.join(OLD_VERSIONS)})")
        _, scenario, sfp, tfp, steps = parts
        if not _NAME.fullmatch(scenario):
            raise ScheduleFormatError(f"bad scenario name {scenario!r}")
        for fp in (sfp, tfp):
            if not re.fullmatch(r"[0-9a-f]{8}", fp):
                raise ScheduleFormatError(f"bad fingerprint {fp!r} (expected 8 hex digits)")
        return cls(scenario, sfp, tfp, decode_steps(steps), source)
