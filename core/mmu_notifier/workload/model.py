"""Workload files: processes, their steps, repetitions, drivers and driver configs.

A workload is TOML or YAML validated by these pydantic models; every model
rejects unknown keys, so a typo is an error naming its field path. A process
works on *regions* it mapped itself (``region`` picks one, modulo how many it
has); a step that needs something the process does not have (a region, an
attached driver) is skipped and counted, never an error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmu_notifier.config import InputFileError, check_nesting, read_text

#: the most processes a workload may start in all (the sum of every ``count``): a limit every mode
#: of the run handles (tested, slow); the deterministic scheduler starts every model thread from its
#: hub, so its stack depth no longer grows with the thread count (issue 18)
MAX_PROCESSES = 10_000
#: the most process steps a whole run may execute (``count * repeat * len(steps)`` summed)
MAX_TOTAL_STEPS = 5_000_000
#: the most operations of each kind the background thread may do
MAX_BACKGROUND = 1_000_000

#: What a step can do. Memory operations act on the process's mm; driver
#: operations go through each named driver's exerciser.
Op = Literal[
    "mmap",  # map `pages` new pages (a new region)
    "touch",  # CPU access to every page of a region (`write` for write faults)
    "mprotect",  # make a region read-only (`write` = true makes it writable again)
    "madvise",  # madvise(DONTNEED) over a region
    "munmap",  # unmap a region
    "mremap",  # grow a region by `pages` (moving it if needed)
    "fork",  # fork a child that writes to a region (COW) and exits
    "soft_dirty",  # clear the soft-dirty bits
    "oom_reap",  # the OOM reaper's non-blockable pass
    "attach",  # open the device once more: take the driver's reference (get)
    "map",  # make the device interested in a region
    "access",  # device access to every page of a region
    "detach",  # close the newest open of the device: drop its reference (put)
    "exit",  # the process exits (its mm goes when the last user goes)
]


class Strict(BaseModel):
    """Unknown keys are errors; models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProcessStep(Strict):
    """One step of a process."""

    op: Op
    region: int = Field(0, ge=0, le=1_000_000, description="which of the process's regions (modulo their number)")
    pages: int = Field(1, ge=1, le=4096, description="pages to map or to grow by")
    write: bool = Field(False, description="write access (touch, access) or writable again (mprotect)")
    driver: str | None = Field(None, description="only this driver (attach/map/access/detach); default every one")


class Process(Strict):
    """A kind of process: ``count`` of them run ``steps``, ``repeat`` times over."""

    name: str = Field(min_length=1, max_length=64)
    count: int = Field(1, ge=1, le=MAX_PROCESSES)
    repeat: int = Field(1, ge=1, le=10_000)
    steps: list[ProcessStep] = Field(min_length=1, max_length=10_000)


class Background(Strict):
    """The kernel's own threads: reclaim, migration and page aging on random live pages."""

    reclaim: int = Field(0, ge=0, le=MAX_BACKGROUND)
    migrate: int = Field(0, ge=0, le=MAX_BACKGROUND)
    age: int = Field(0, ge=0, le=MAX_BACKGROUND)


class Workload(Strict):
    """A whole run."""

    name: str = Field("workload", max_length=200)
    seed: int = Field(0, ge=-(2**63), lt=2**63)
    drivers: list[str] | None = Field(None, max_length=1000, description="drivers to use; default every installed one")
    driver_configs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    processes: list[Process] = Field(min_length=1, max_length=MAX_PROCESSES)
    background: Background = Background()

    @model_validator(mode="after")
    def _bounded(self) -> Workload:
        """The sums the per-field limits do not cover: processes in all, and steps in all."""
        processes = sum(p.count for p in self.processes)
        if processes > MAX_PROCESSES:
            raise ValueError(f"processes: {processes} processes in all (the sum of every count); "
                             f"at most {MAX_PROCESSES}")
        if self.total_steps() > MAX_TOTAL_STEPS:
            raise ValueError(f"processes: {self.total_steps()} steps in all (count * repeat * steps, summed); "
                             f"at most {MAX_TOTAL_STEPS}")
        return self

    def total_steps(self) -> int:
        """How many process steps the run executes (for progress)."""
        return sum(p.count * p.repeat * len(p.steps) for p in self.processes)


class WorkloadError(Exception):
    """A workload file could not be read or is invalid; the message is one line naming the field."""


def load(path: Path) -> Workload:
    """Read and validate a TOML (``.toml``) or YAML (``.yaml``/``.yml``) workload file."""
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise WorkloadError(f"workload {path}: expected a .toml, .yaml or .yml file")
    try:
        text = read_text(path)
    except InputFileError as error:
        raise WorkloadError(f"workload {error}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
        check_nesting(data, f"workload {path}")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise WorkloadError(f"workload {path}: not valid {path.suffix[1:].upper()}: {first}") from None
    except RecursionError:
        raise WorkloadError(f"workload {path}: nested too deeply") from None
    except InputFileError as error:
        raise WorkloadError(str(error)) from None
    return parse(data, str(path))


def parse(data: Any, origin: str = "<data>") -> Workload:
    """Validate already-parsed data; the first problem becomes a one-line :class:`WorkloadError`."""
    try:
        return Workload.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        if problem["type"] == "value_error" and not problem["loc"]:  # a whole-workload rule names its own field
            raise WorkloadError(f"workload {origin}: {problem['ctx']['error']}{more}") from None
        where = ".".join(str(part) for part in problem["loc"]) or "<top>"
        raise WorkloadError(f"workload {origin}: {where}: {problem['msg']}{more}") from None
