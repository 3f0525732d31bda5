"""The pydantic config: defaults, validation, TOML and environment sources, the scheme's hooks."""

from __future__ import annotations

import tomllib

import pytest

from mmu_notifier import Kernel
from mmu_notifier.config import read_environ, validate
from mmu_notifier.errors import ConfigError
from mmu_notifier_amdkfd import FaultPoint, KfdConfig, KfdDriver


def test_defaults_are_the_5_4_kernel_without_faults() -> None:
    config = KfdConfig()
    assert config.scheme == "5.4"
    assert config.cwsr is True
    assert (config.pasid_min, config.pasid_max) == (1, 0xFFFF)
    assert config.faults.pqm_init is None and config.faults.init_apertures is None and config.faults.cwsr is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"bogus": 1}, "bogus"),
        ({"scheme": "5.5"}, "scheme"),
        ({"gpus": 0}, "gpus"),
        ({"pasid_min": 0}, "pasid_min"),
        ({"doorbell_slices": 1}, "doorbell_slices"),
        ({"faults": {"init_apertures": {"nth": 0}}}, "nth"),
        ({"faults": {"cwsr": {"probability": 1.5}}}, "probability"),
        ({"faults": {"vm_mmap": {"nth": 1}}}, "vm_mmap"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        validate("amdkfd", KfdConfig, raw)


def test_an_empty_pasid_range_is_rejected() -> None:
    with pytest.raises(ConfigError, match="pasid_max"):
        validate("amdkfd", KfdConfig, {"pasid_min": 10, "pasid_max": 9})


def test_the_documented_toml_table_configures_a_late_failure() -> None:
    text = '[drivers.amdkfd]\nscheme = "legacy"\nfaults.init_apertures = { nth = 1 }\n'
    config = validate("amdkfd", KfdConfig, tomllib.loads(text)["drivers"]["amdkfd"])
    assert isinstance(config, KfdConfig)
    assert config.scheme == "5.3"
    assert config.faults.init_apertures == FaultPoint(nth=1)


def test_environment_variables_configure_scheme_and_faults() -> None:
    environ = {
        "MMU_NOTIFIER_AMDKFD__SCHEME": "get",
        "MMU_NOTIFIER_AMDKFD__FAULTS": '{"cwsr": {"probability": 0.25, "seed": 7}}',
    }
    config = validate("amdkfd", KfdConfig, read_environ(environ)["amdkfd"])
    assert isinstance(config, KfdConfig)
    assert config.scheme == "5.13"
    assert config.faults.cwsr == FaultPoint(probability=0.25, seed=7)


def test_a_scheme_written_as_a_number_is_the_5_4_kernel() -> None:
    for raw in (read_environ({"MMU_NOTIFIER_AMDKFD__SCHEME": "5.4"})["amdkfd"], tomllib.loads("scheme = 5.4")):
        config = validate("amdkfd", KfdConfig, raw)
        assert isinstance(config, KfdConfig) and config.scheme == "5.4"


def test_the_schema_exports_every_field() -> None:
    properties = KfdConfig.model_json_schema()["properties"]
    assert set(properties) == set(KfdConfig.model_fields)


@pytest.mark.parametrize(("scheme", "has_alloc"), [("5.4", False), ("legacy", False), ("get", True)])
def test_only_the_get_scheme_has_alloc_notifier(scheme: str, has_alloc: bool) -> None:
    ops = Kernel(frames=1).drivers.add(KfdDriver(KfdConfig(scheme=scheme)))  # type: ignore[arg-type]
    assert (ops.alloc_notifier is not None) == has_alloc
    assert ops.release is not None and ops.free_notifier is not None
