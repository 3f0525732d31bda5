"""Driver configuration: a pydantic base model, loaded from TOML and the environment.

Models module parameters. A driver declares ``config_model``, a subclass of
:class:`DriverConfig`; unknown keys are rejected and configs are immutable.

Sources, later ones winning per field:

1. the model's defaults;
2. a TOML file, one table per driver: ``[drivers.gru]`` with ``chiplets = 4``;
3. environment variables ``MMU_NOTIFIER_<DRIVER>__<FIELD>``, e.g. ``MMU_NOTIFIER_GRU__CHIPLETS=4``:
   the text as it is for a field that takes text (``MMU_NOTIFIER_GRU__SCHEME=5.3`` is the
   string ``"5.3"``), else parsed as JSON when it parses (numbers, booleans, lists).
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from mmu_notifier.errors import ConfigError

ENV_PREFIX = "MMU_NOTIFIER_"


class DriverConfig(BaseModel):
    """Base of every driver's configuration: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def kernel_version(aliases: Mapping[str, str] | None = None) -> BeforeValidator:
    """A pydantic "before" validator for a field that names a kernel version as text (``"5.4"``).

    A driver modelling several kernels picks one with a text field such as
    ``scheme``. Two inputs need help before pydantic checks the value against
    the field's ``Literal``: a TOML ``scheme = 5.4`` (and a JSON value) arrives
    as the number 5.4, which is read back as the text ``"5.4"``; and the names
    earlier releases of a plugin used (``"legacy"``, ``"getput"``) are mapped,
    through ``aliases``, to the version each meant, so old configs keep
    working. Anything else is passed on unchanged for the field to judge (an
    unknown version is the field's error, naming the allowed values)::

        from typing import Annotated, Literal
        from mmu_notifier.config import DriverConfig, kernel_version

        class MyConfig(DriverConfig):
            scheme: Annotated[Literal["5.3", "5.4"], kernel_version({"legacy": "5.3"})] = "5.4"

    A number keeps the text Python gives it, so write versions whose float
    reads back the same (``5.13`` does; a ``5.10`` in TOML would read as
    ``"5.1"`` and must be quoted).
    """
    table = dict(aliases or {})

    def text(value: object) -> object:
        if isinstance(value, float):
            return str(value)
        return table.get(value, value) if isinstance(value, str) else value

    return BeforeValidator(text)


#: the largest input file the model reads (a workload or a ``--config`` file), in bytes
MAX_FILE_BYTES = 4 << 20
#: the deepest nesting of tables, lists and mappings an input file may have
MAX_NESTING = 32
#: the most values (scalars, tables, lists) an input file may hold, shared ones (YAML aliases) counted each time
MAX_VALUES = 1_000_000


class InputFileError(ValueError):
    """An input file cannot be read as text or is shaped beyond the limits; the message is one line."""


def read_text(path: Path) -> str:
    """The text of an input file: at most :data:`MAX_FILE_BYTES`, UTF-8 (a BOM is allowed), else
    :class:`InputFileError` naming the file and the reason (never a ``UnicodeDecodeError``)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InputFileError(f"{path}: {error.strerror or error}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        byte = raw[error.start]
        raise InputFileError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {error.start})") from None


def check_nesting(data: Any, origin: object, limit: int = MAX_NESTING) -> None:
    """Refuse data nested deeper than ``limit`` (walked without recursion), naming the file."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise InputFileError(f"{origin}: more than {MAX_VALUES} values (counting every alias use)")
        if depth > limit:
            raise InputFileError(f"{origin}: nested more than {limit} levels deep")
        if isinstance(item, dict):
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)


def parse_toml(path: Path) -> dict[str, Any]:
    """Read a TOML input file within the limits; :class:`InputFileError` with one line on any problem."""
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputFileError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise InputFileError(f"{path}: nested more than {MAX_NESTING} levels deep") from None
    check_nesting(data, path)
    return data


def read_toml(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[drivers.NAME]`` tables of a TOML file, keyed by driver name."""
    try:
        data = parse_toml(path)
    except InputFileError as error:
        raise ConfigError("*", [str(error)]) from None
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
        found.setdefault(driver.lower(), {})[field.lower()] = _parse_env(raw)
    return found


class _EnvInt(int):
    """A number read from an environment variable, remembering its text (a text field takes that)."""

    text: str


class _EnvFloat(float):
    """A number read from an environment variable, remembering its text ("5.3" stays "5.3" for a text field)."""

    text: str


def _parse_env(raw: str) -> Any:
    """JSON when the text parses as JSON, else the text; a number keeps its text for a field that takes text."""
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if isinstance(value, int) and not isinstance(value, bool):
        value = _EnvInt(value)
    elif isinstance(value, float):
        value = _EnvFloat(value)
    else:
        return value
    value.text = raw
    return value


def _takes_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(arg, str) for arg in args)
    return any(_takes_text(arg) for arg in args)  # Optional[str], unions, Annotated[str, ...]


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
    fields = model.model_fields
    typed = {key: _from_text(value, fields.get(key)) for key, value in raw.items()}
    try:
        config = model.model_validate(typed)
    except ValidationError as error:
        raise ConfigError(driver, [_describe(problem) for problem in error.errors()]) from error
    _check_defaults(driver, model, config, raw)
    return config


def _from_text(value: Any, field: Any) -> Any:
    """A number read from the environment, as its text when its field takes text."""
    if isinstance(value, _EnvInt | _EnvFloat) and field is not None and _takes_text(field.annotation):
        return value.text
    return value


def _check_defaults(driver: str, model: type[DriverConfig], config: DriverConfig, raw: Mapping[str, Any]) -> None:
    """Pydantic does not validate defaults: a default that breaks its own field's constraint is a
    :class:`ConfigError` here ("invalid default"), instead of a config reported valid."""
    try:
        model.model_validate(config.model_dump())
    except ValidationError as error:
        problems = [f"invalid default: {_describe(p)}" for p in error.errors()
                    if not p["loc"] or p["loc"][0] not in raw]
        if problems:
            raise ConfigError(driver, problems) from error


def _describe(problem: Mapping[str, Any]) -> str:
    field = ".".join(str(part) for part in problem["loc"]) or "<config>"
    return f"field {field!r} = {problem.get('input')!r}: {problem['msg']}"
