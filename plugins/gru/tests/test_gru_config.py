"""The driver's configuration: defaults, every validation message, loading through the core."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mmu_notifier as mn
from mmu_notifier.config import validate
from mmu_notifier_gru import GruConfig, GruDriver
from mmu_notifier_gru.config import ASID_INC, MAX_ASID, MAX_CONTEXTS
from mmu_notifier_gru.legacy import GruScheme53


def test_defaults_are_the_v54_driver_on_a_two_chiplet_machine() -> None:
    config = GruConfig()
    assert (config.scheme, config.chiplets, config.contexts_per_chiplet) == ("5.4", 2, MAX_CONTEXTS)
    assert (config.asid_min, config.asid_max, config.dropin_mode) == (8, MAX_ASID, "call_os")


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        ({"chiplets": 0}, "chiplets", "at least one GRU"),
        ({"chiplets": 65}, "chiplets", "between 1 and 64"),
        ({"contexts_per_chiplet": 17}, "contexts_per_chiplet", "bitmap of a gru_mm_struct has 16 bits"),
        ({"tlb_entries": 0}, "tlb_entries", "at least 1"),
        ({"asid_min": 0}, "asid_min", "ASID 0 means 'none'"),
        ({"asid_max": 100}, "asid_max", "multiple of 8"),
        ({"asid_max": MAX_ASID + 8}, "asid_max", "multiple of 8 between"),
        ({"asid_min": 8, "asid_max": 64}, "<config>", "holds 7 ASID(s); it must hold more than contexts_per_chiplet"),
        ({"dropin_mode": "polling"}, "dropin_mode", "'interrupt' or 'call_os'"),
        ({"scheme": "v5.2"}, "scheme", "'5.3' or '5.4'"),
        ({"chiplet": 2}, "chiplet", "Extra inputs are not permitted"),
    ],
)
def test_each_invalid_setting_is_refused_with_a_message_naming_field_and_reason(
    raw: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(mn.ConfigError) as caught:
        validate("gru", GruConfig, raw)
    message = str(caught.value)
    assert f"field {field!r}" in message and reason in message and "driver 'gru'" in message


@given(st.integers(1, MAX_CONTEXTS), st.integers(0, 40))
def test_an_asid_range_is_valid_exactly_when_it_outnumbers_the_contexts(contexts: int, asids: int) -> None:
    raw = {"contexts_per_chiplet": contexts, "asid_min": 8, "asid_max": 8 + asids * ASID_INC}
    if asids > contexts:
        assert validate("gru", GruConfig, raw).contexts_per_chiplet == contexts
    else:
        with pytest.raises(mn.ConfigError, match="ASID range"):
            validate("gru", GruConfig, raw)


def test_the_config_is_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        GruConfig().chiplets = 4  # type: ignore[misc]


def test_entry_point_loading_applies_the_config_and_reports_an_invalid_one() -> None:
    kernel = mn.Kernel(frames=16)
    report = kernel.drivers.load_entry_points({"gru": {"chiplets": 3, "dropin_mode": "interrupt"}}, only=["gru"])
    driver = report.loaded["gru"].driver
    assert isinstance(driver, GruDriver) and len(driver.gru_base) == 3
    bad = mn.Kernel(frames=16).drivers.load_entry_points({"gru": {"tlb_entries": -1}}, only=["gru"])
    assert "tlb_entries" in str(bad.failed["gru"]) and not bad.loaded


def test_scheme_legacy_loads_the_v53_ops_table_and_getput_the_v54_one() -> None:
    kernel = mn.Kernel(frames=16)
    legacy = kernel.drivers.load_entry_points({"gru": {"scheme": "legacy"}}, only=["gru"]).loaded["gru"]
    assert isinstance(legacy.driver.scheme, GruScheme53) and legacy.version == "5.3"
    assert legacy.release is not None and legacy.alloc_notifier is None and legacy.free_notifier is None
    current = mn.Kernel(frames=16).drivers.load_entry_points(only=["gru"]).loaded["gru"]
    assert current.version == "5.4" and current.release is None
    assert None not in (current.alloc_notifier, current.free_notifier, current.invalidate_range_start)
