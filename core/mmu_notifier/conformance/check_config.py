"""Config: the default is valid, bad input is rejected naming the field, the JSON schema exports.

Models module parameters: a driver's ``config_model`` (a
:class:`~mmu_notifier.config.DriverConfig`) is validated by the core's
loader, from a TOML table or ``MMU_NOTIFIER_<DRIVER>__<FIELD>`` variables.
These checks import the entry point themselves, so they report a config
problem even when the driver cannot be loaded.
"""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import ValidationError

from mmu_notifier.config import DriverConfig, validate
from mmu_notifier.conformance.harness import config_errors

#: values of a type no ordinary field accepts; the first one a field rejects is used
_WRONG_VALUES: tuple[Any, ...] = (object(), {"not": "this"}, ["not", "this"], "not a valid value", 1.5, -1)


def _model(entry_point: EntryPoint) -> type[DriverConfig]:
    try:
        factory = entry_point.load()
    except Exception as error:
        pytest.fail(f"driver {entry_point.name!r}: import failed: {type(error).__name__}: {error}", pytrace=False)
    model = getattr(factory, "config_model", DriverConfig)
    if not (isinstance(model, type) and issubclass(model, DriverConfig)):
        pytest.fail(f"driver {entry_point.name!r}: config_model {model!r} is not a mmu_notifier.config.DriverConfig "
                    f"subclass", pytrace=False)
    return model


def test_default_config_valid(mmu_entry_point: EntryPoint) -> None:
    """The config model builds from its defaults alone (what a driver gets with no config at all)."""
    model = _model(mmu_entry_point)
    error = config_errors(mmu_entry_point.name, model, {})
    if error is not None:
        pytest.fail(f"the default config of {mmu_entry_point.name!r} is invalid: {error}", pytrace=False)


def test_unknown_config_key_rejected(mmu_entry_point: EntryPoint) -> None:
    """An unknown key is an error naming the driver and the key (models reject extra keys)."""
    name = mmu_entry_point.name
    model = _model(mmu_entry_point)
    key = "no_such_setting_for_the_kit"
    error = config_errors(name, model, {key: 1})
    if error is None:
        pytest.fail(f"driver {name!r} accepted the unknown config key {key!r}; its config model must keep "
                    f"DriverConfig's extra='forbid'", pytrace=False)
    if key not in str(error) or name not in str(error):
        pytest.fail(f"the error for the unknown key {key!r} does not name both the key and the driver: {error}",
                    pytrace=False)


def test_wrong_config_type_rejected(mmu_entry_point: EntryPoint) -> None:
    """A value of the wrong type is an error naming the driver and the field, for every field."""
    name = mmu_entry_point.name
    model = _model(mmu_entry_point)
    if not model.model_fields:
        pytest.skip(f"driver {name!r}: its config model declares no field, so no value can have a wrong type")
    problems = []
    checked = 0
    for field in model.model_fields:
        for value in _WRONG_VALUES:
            error = config_errors(name, model, {field: value})
            if error is not None:
                checked += 1
                if field not in str(error) or name not in str(error):
                    problems.append(f"field {field!r} = {value!r}: the error does not name driver and field: {error}")
                break
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    if not checked:
        pytest.fail(f"driver {name!r}: no field of its config rejected any wrongly typed value "
                    f"({', '.join(model.model_fields)}); give the fields types", pytrace=False)


def test_config_schema_exports(mmu_entry_point: EntryPoint) -> None:
    """``mmu-notifier drivers --schema NAME`` works: the JSON schema exports and lists every field."""
    model = _model(mmu_entry_point)
    try:
        schema = model.model_json_schema()
        text = json.dumps(schema)
    except (TypeError, ValueError, ValidationError) as error:
        pytest.fail(f"the JSON schema of {mmu_entry_point.name!r}'s config does not export: {error}", pytrace=False)
    missing = [f for f in model.model_fields if f not in schema.get("properties", {})]
    if missing:
        pytest.fail(f"the JSON schema lacks the field(s) {missing}", pytrace=False)
    assert json.loads(text) == schema
    default = validate(mmu_entry_point.name, model, {})
    if model.model_fields and not default.model_config.get("frozen", False):
        pytest.fail(f"driver {mmu_entry_point.name!r}: its config is mutable; keep DriverConfig's frozen=True "
                    f"(module parameters do not change under a running driver)", pytrace=False)
