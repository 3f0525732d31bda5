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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    region: int = Field(0, ge=0, description="which of the process's regions (modulo their number)")
    pages: int = Field(1, ge=1, le=4096, description="pages to map or to grow by")
    write: bool = Field(False, description="write access (touch, access) or writable again (mprotect)")
    driver: str | None = Field(None, description="only this driver (attach/map/access/detach); default every one")


class Process(Strict):
    """A kind of process: ``count`` of them run ``steps``, ``repeat`` times over."""

    name: str = Field(min_length=1)
    count: int = Field(1, ge=1, le=1000)
    repeat: int = Field(1, ge=1, le=10_000)
    steps: list[ProcessStep] = Field(min_length=1)


class Background(Strict):
    """The kernel's own threads: reclaim, migration and page aging on random live pages."""

    reclaim: int = Field(0, ge=0)
    migrate: int = Field(0, ge=0)
    age: int = Field(0, ge=0)


class Workload(Strict):
    """A whole run."""

    name: str = "workload"
    seed: int = 0
    drivers: list[str] | None = Field(None, description="drivers to use; default every installed one")
    driver_configs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    processes: list[Process] = Field(min_length=1)
    background: Background = Background()

    def total_steps(self) -> int:
        """How many process steps the run executes (for progress)."""
        return sum(p.count * p.repeat * len(p.steps) for p in self.processes)


class WorkloadError(Exception):
    """A workload file could not be read or is invalid; the message is one line naming the field."""


def load(path: Path) -> Workload:
    """Read and validate a TOML (``.toml``) or YAML (``.yaml``/``.yml``) workload file."""
    try:
        text = path.read_text()
    except OSError as error:
        raise WorkloadError(f"workload {path}: {error.strerror or error}") from error
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise WorkloadError(f"workload {path}: expected a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise WorkloadError(f"workload {path}: not valid {path.suffix[1:].upper()}: {first}") from error
    return parse(data, str(path))


def parse(data: Any, origin: str = "<data>") -> Workload:
    """Validate already-parsed data; the first problem becomes a one-line :class:`WorkloadError`."""
    try:
        return Workload.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "<top>"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise WorkloadError(f"workload {origin}: {where}: {problem['msg']}{more}") from error
