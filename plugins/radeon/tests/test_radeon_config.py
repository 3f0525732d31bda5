"""The radeon module parameters: defaults, the scheme as text or number, bad values named."""

from __future__ import annotations

import pytest

from mmu_notifier import Kernel
from mmu_notifier.config import validate
from mmu_notifier.errors import ConfigError
from mmu_notifier_radeon import SCHEMES, RadeonConfig, RadeonDriver
from mmu_notifier_radeon.legacy import Scheme53
from mmu_notifier_radeon.radeon_mn import Scheme54


def test_defaults_are_5_4_with_the_guard_and_release_flags_0() -> None:
    config = RadeonConfig()
    assert config.scheme == "5.4" and config.unpaired_unregister_guard and not config.release_blockable
    assert not config.register_failure_put and config.fence_latency == 1 and config.devices == 1
    assert isinstance(RadeonDriver(config).scheme, Scheme54)


def test_scheme_is_chosen_once_from_the_config() -> None:
    assert isinstance(RadeonDriver(validate("radeon", RadeonConfig, {"scheme": 5.3})).scheme, Scheme53)
    assert set(SCHEMES) == {"5.3", "5.4"}


def test_the_ops_table_is_the_chosen_kernels() -> None:
    kernel = Kernel(frames=16)
    ops54 = kernel.drivers.add(RadeonDriver(RadeonConfig()))
    assert ops54.alloc_notifier is not None and ops54.free_notifier is not None and ops54.release is not None
    assert ops54.invalidate_range_end is None  # radeon has no end op in any kernel
    other = Kernel(frames=16)
    ops53 = other.drivers.add(RadeonDriver(RadeonConfig(scheme="5.3")))
    assert ops53.alloc_notifier is None and ops53.free_notifier is None
    assert ops53.release is not None and ops53.invalidate_range_start is not None


@pytest.mark.parametrize(("field", "value"), [("scheme", "5.5"), ("devices", 0), ("gtt_pages", 0),
                                              ("fence_latency", -1), ("release_blockable", "maybe")])
def test_bad_values_are_config_errors_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        validate("radeon", RadeonConfig, {field: value})


def test_every_field_has_a_description() -> None:
    schema = RadeonConfig.model_json_schema()
    assert all(prop.get("description") for prop in schema["properties"].values())
