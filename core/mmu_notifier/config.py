"""Driver configuration: a pydantic base model, loaded from TOML and the environment.

Models module parameters. A driver declares ``config_model``, a subclass of
:class:`DriverConfig`; unknown keys are rejected and configs are immutable.

Sources, later ones winning per field:

1. the model's defaults;
2. a TOML file, one table per driver: ``[drivers.gru]`` with ``chiplets = 4``;
3. environment variables ``MMU_NOTIFIER_<DRIVER>__<FIELD>`` (value parsed as
   JSON when it parses, else taken as a string), e.g. ``MMU_NOTIFIER_GRU__CHIPLETS=4``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mmu_notifier.errors import ConfigError

ENV_PREFIX = "MMU_NOTIFIER_"


class DriverConfig(BaseModel):
    """Base of every driver's configuration: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_toml(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[drivers.NAME]`` tables of a TOML file, keyed by driver name."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError("*", [f"{path}: {error}"]) from error
    drivers = data.get("drivers", {})
    if not isinstance(drivers, dict) or not all(isinstance(v, dict) for v in drivers.values()):
        raise ConfigError("*", [f"{path}: [drivers] must hold one table per driver"])
    return drivers


def read_environ(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Driver settings from ``MMU_NOTIFIER_<DRIVER>__<FIELD>`` variables."""
    found: dict[str, dict[str, Any]] = {}
    for key, raw in (os.environ if environ is None else environ).items():
        if not key.startswith(ENV_PREFIX) or "__" not in key[len(ENV_PREFIX) :]:
            continue
        driver, _, field = key[len(ENV_PREFIX) :].partition("__")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        found.setdefault(driver.lower(), {})[field.lower()] = value
    return found


def merge_sources(*sources: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Merge per-driver settings field by field; later sources win."""
    merged: dict[str, dict[str, Any]] = {}
    for source in sources:
        for driver, fields in source.items():
            merged.setdefault(driver, {}).update(fields)
    return merged


def driver_configs(config_file: Path | None) -> dict[str, dict[str, Any]]:
    """Driver settings from a TOML file (``--config FILE``, if given) and the environment; the environment wins."""
    file_settings = read_toml(config_file) if config_file else {}
    return merge_sources(file_settings, read_environ())


def validate(driver: str, model: type[DriverConfig], raw: Mapping[str, Any]) -> DriverConfig:
    """Build ``model`` from ``raw``; a :class:`ConfigError` names driver, field, value and reason."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(driver, [_describe(problem) for problem in error.errors()]) from error


def _describe(problem: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in problem["loc"]) or "<config>"
    return f"field {field!r} = {problem.get('input')!r}: {problem['msg']}"
