"""Plugin discovery, hook validation, wrappers and configs (sections 6-7 of the core issue)."""

from __future__ import annotations

import importlib.metadata
import io
import json
import sys
import types

import pytest
from pydantic import Field
from recording import RecordingDriver

import mmu_notifier as mn
from mmu_notifier import config, log, plugins
from mmu_notifier.cli import main


class GoodConfig(mn.DriverConfig):
    chiplets: int = Field(2, gt=0, description="GRU chiplets")


class GoodDriver(RecordingDriver):
    name = "good"
    version = "2.1"
    config_model = GoodConfig


class BadSignature(mn.Driver):
    name = "badsig"

    @mn.hookimpl
    def alloc_notifier(self, mm, extra):
        return mn.MMUNotifier()

    @mn.hookimpl
    def free_notifier(self, subscription):
        pass


class MissingFree(mn.Driver):
    name = "nofree"

    @mn.hookimpl
    def alloc_notifier(self, mm):
        return mn.MMUNotifier()


class UnknownHook(MissingFree):
    name = "unknown"

    @mn.hookimpl
    def free_notifier(self, subscription):
        pass

    @mn.hookimpl
    def invalidate_page(self, subscription, address):
        pass


@pytest.fixture
def fake_entry_points(monkeypatch):
    module = types.ModuleType("fake_drivers")
    module.GoodDriver = GoodDriver
    module.BadSignature = BadSignature
    module.MissingFree = MissingFree
    module.UnknownHook = UnknownHook
    monkeypatch.setitem(sys.modules, "fake_drivers", module)
    names = {"good": "GoodDriver", "badsig": "BadSignature", "nofree": "MissingFree", "unknown": "UnknownHook",
             "broken": "Missing"}
    entry_points = [
        importlib.metadata.EntryPoint(name=name, value=f"fake_drivers:{attr}", group=plugins.ENTRY_POINT_GROUP)
        for name, attr in sorted(names.items())
    ]
    monkeypatch.setattr(plugins, "available_drivers", lambda: entry_points)
    return entry_points


def test_broken_plugins_are_reported_by_name_and_do_not_stop_others(fake_entry_points):
    report = mn.Kernel().drivers.load_entry_points()
    assert list(report.loaded) == ["good"]
    assert set(report.failed) == {"badsig", "nofree", "unknown", "broken"}
    assert "import failed" in str(report.failed["broken"])
    assert "bad hook" in str(report.failed["badsig"])
    assert "lacks required hook(s) ['free_notifier']" in str(report.failed["nofree"])
    assert "unknown hook(s) ['invalidate_page']" in str(report.failed["unknown"])


def test_declared_name_must_match_entry_point(monkeypatch, fake_entry_points):
    renamed = importlib.metadata.EntryPoint(name="other", value="fake_drivers:GoodDriver",
                                            group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "available_drivers", lambda: [renamed])
    report = mn.Kernel().drivers.load_entry_points()
    assert "declares name 'good'" in str(report.failed["other"])


def test_invalid_config_names_driver_field_value_and_reason(fake_entry_points):
    kernel = mn.Kernel()
    report = kernel.drivers.load_entry_points({"good": {"chiplets": -1}}, only=["good"])
    error = report.failed["good"]
    assert isinstance(error, mn.ConfigError)
    assert "driver 'good'" in str(error) and "'chiplets' = -1" in str(error) and "greater than 0" in str(error)
    assert kernel.drivers.names() == []  # nothing of that driver is registered


def test_unknown_config_key_is_rejected(fake_entry_points):
    report = mn.Kernel().drivers.load_entry_points({"good": {"chiplet": 3}}, only=["good"])
    assert "'chiplet'" in str(report.failed["good"]) and "Extra inputs" in str(report.failed["good"])


def test_config_from_toml_and_environment(tmp_path, fake_entry_points):
    path = tmp_path / "drivers.toml"
    path.write_text("[drivers.good]\nchiplets = 3\n")
    merged = config.merge_sources(config.read_toml(path), config.read_environ({"MMU_NOTIFIER_GOOD__CHIPLETS": "5"}))
    assert merged == {"good": {"chiplets": 5}}
    report = mn.Kernel().drivers.load_entry_points(merged, only=["good"])
    assert report.loaded["good"].driver.config.chiplets == 5


def test_bad_toml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[drivers\n")
    with pytest.raises(mn.ConfigError, match=r"bad\.toml"):
        config.read_toml(path)


def test_asking_for_a_missing_driver_reports_it(fake_entry_points):
    report = mn.Kernel().drivers.load_entry_points(only=["nosuch"])
    assert "no such driver" in str(report.failed["nosuch"])


def test_cli_prints_schema_and_lists_drivers(fake_entry_points, capsys):
    assert main(["drivers", "--schema", "good"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["chiplets"]["exclusiveMinimum"] == 0
    assert main(["drivers", "--json"]) == 1  # broken drivers make it fail
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["good"]["config"] == "valid" and rows["broken"]["config"].startswith("invalid")
    assert main(["drivers", "--schema", "nosuch"]) == 2
    assert "no installed driver" in capsys.readouterr().err


def test_call_reaches_only_the_owning_driver(kernel, mm):
    drivers = []
    for index in range(5):
        recording = RecordingDriver()
        kernel.drivers.add(recording, name=f"d{index}")
        drivers.append(recording)
    mn.get(drivers[2], mm)
    mm.munmap(mm.mmap(4096), 4096)
    assert [len(d.calls("start")) for d in drivers] == [0, 0, 1, 0, 0]


def test_direct_dispatch_without_wrappers(kernel, driver):
    ops = kernel.drivers.ops_of(driver)
    assert ops.invalidate_range_start == driver.invalidate_range_start  # the bound method itself


def test_wrapper_plugin_wraps_every_driver(kernel, mm):
    seen = []

    class Tracer:
        @mn.hookimpl(wrapper=True)
        def invalidate_range_start(self, subscription, range):
            seen.append(subscription.ops.name)
            return (yield)

    first, second = RecordingDriver(), RecordingDriver()
    kernel.drivers.add(first, name="first")
    kernel.drivers.add(second, name="second")
    tracer = Tracer()
    kernel.drivers.add_plugin(tracer)
    mn.get(first, mm)
    mn.get(second, mm)
    mm.munmap(mm.mmap(4096), 4096)
    assert sorted(seen) == ["first", "second"]
    assert len(first.calls("start")) == 1 and len(second.calls("start")) == 1
    kernel.drivers.remove_plugin(tracer)
    assert kernel.drivers.ops_of(first).invalidate_range_start == first.invalidate_range_start


def test_impl_with_fewer_arguments_is_adapted(kernel, mm):
    hits = []

    class Sparse(RecordingDriver):
        @mn.hookimpl
        def invalidate_range_start(self, range):
            hits.append(range.event)
            return 0

    sparse = Sparse()
    kernel.drivers.add(sparse, name="sparse")
    mn.get(sparse, mm)
    mm.munmap(mm.mmap(4096), 4096)
    assert hits == [mn.Event.UNMAP]


def test_unloaded_driver_is_a_clear_error(mm):
    with pytest.raises(mn.MisuseError, match="not loaded"):
        mn.get(RecordingDriver(), mm)


def test_logging_is_silent_by_default_and_json_on_request(kernel, driver, mm):
    assert log.LOG.on is False
    stream = io.StringIO()
    log.configure("json", stream=stream)
    try:
        mn.put(mn.get(driver, mm))
        mn.synchronize(kernel)
    finally:
        log.configure(None)
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events[:3] == ["notifier.alloc", "notifier.register", "notifier.put"]
    assert "notifier.free" in events and "notifier.synchronize" in events
    assert set(events) <= set(log.EVENTS)


def test_unknown_log_format_is_rejected():
    with pytest.raises(ValueError, match="log format"):
        log.configure("xml")


def test_invalidation_events_are_logged(kernel, driver, mm):
    stream = io.StringIO()
    log.configure("json", stream=stream)
    try:
        mn.get(driver, mm)
        mm.munmap(mm.mmap(4096), 4096)
    finally:
        log.configure(None)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    starts = [r for r in records if r["event"] == "invalidate.start"]
    assert starts and starts[0]["kind"] == "UNMAP" and starts[0]["blockable"] is True
    assert any(r["event"] == "invalidate.end" for r in records)


def test_an_environment_variable_is_text_for_a_text_field_and_json_for_others() -> None:
    """MMU_NOTIFIER_<DRIVER>__SCHEME=5.3 is the string "5.3", not the float 5.3; numbers still parse."""
    from typing import Literal

    class Model(config.DriverConfig):
        scheme: Literal["5.3", "5.4"] = "5.4"
        label: str | None = None
        chiplets: int = 1
        ratios: tuple[float, ...] = ()

    environ = {
        "MMU_NOTIFIER_X__SCHEME": "5.3",
        "MMU_NOTIFIER_X__LABEL": "12",
        "MMU_NOTIFIER_X__CHIPLETS": "4",
        "MMU_NOTIFIER_X__RATIOS": "[0.5, 2]",
    }
    built = config.validate("x", Model, config.read_environ(environ)["x"])
    assert (built.scheme, built.label, built.chiplets, built.ratios) == ("5.3", "12", 4, (0.5, 2.0))


def test_kernel_version_reads_a_number_as_text_and_maps_deprecated_names(tmp_path) -> None:
    """config.kernel_version: a TOML ``scheme = 5.13`` is "5.13", "legacy" is "5.3"; anything else is the field's
    to judge, with the allowed versions in the error."""
    from typing import Annotated, Literal

    from mmu_notifier.errors import ConfigError

    class Model(config.DriverConfig):
        scheme: Annotated[Literal["5.3", "5.4", "5.13"], config.kernel_version({"legacy": "5.3"})] = "5.4"

    path = tmp_path / "c.toml"
    path.write_text("[drivers.x]\nscheme = 5.13\n")
    assert config.validate("x", Model, config.read_toml(path)["x"]).scheme == "5.13"
    assert config.validate("x", Model, {"scheme": "legacy"}).scheme == "5.3"
    assert config.validate("x", Model, config.read_environ({"MMU_NOTIFIER_X__SCHEME": "5.4"})["x"]).scheme == "5.4"
    assert Model().scheme == "5.4"
    with pytest.raises(ConfigError) as error:
        config.validate("x", Model, {"scheme": "getput"})  # not an alias of this model
    assert "scheme" in str(error.value) and "'getput'" in str(error.value) and "5.13" in str(error.value)
    with pytest.raises(ConfigError):
        config.validate("x", Model, {"scheme": 6})
