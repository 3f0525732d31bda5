"""The conformance kit: one pytest suite every driver plugin must pass.

Run it with ``pytest --pyargs mmu_notifier.conformance`` (every installed
driver; ``--mmu-driver NAME`` restricts, repeatable) or
``mmu-notifier conformance [NAME...]`` (also ``python -m
mmu_notifier.conformance``). The pytest plugin is :mod:`.plugin`, the
harness (loading a driver, a fresh world per check) is :mod:`.harness`,
the concurrency scenarios are :mod:`.races`, and the invariants live in
:mod:`mmu_notifier.invariants`, shared with the main job.

Each check is a test named after what it checks; :data:`CHECKS` says what a
failure of each means (the plugin guide has the long form).
"""

from __future__ import annotations

#: test name -> what it means when it fails
CHECKS: dict[str, str] = {
    "test_driver_loads": "the entry point imports, its hooks match the hook specs, its required hooks exist, its "
    "default config validates and its exerciser hook returns an object following the contract",
    "test_exerciser_contract": "attach/map_range/access/translations/detach/unload behave as the contract says and "
    "the exerciser's capabilities equal the driver class's",
    "test_capabilities_match_hooks": "each declared capability is backed by the hooks it needs (release, "
    "invalidate_range_start ...)",
    "test_one_subscription_per_mm": "every attach on an mm shares one subscription (users == attaches); different "
    "mms get different ones",
    "test_fresh_subscription_after_last_detach": "after the last detach the driver is unlinked at once and the next "
    "attach allocates a new subscription, even while the old one's free is pending",
    "test_alloc_free_paired": "every allocated subscription is freed exactly once, through free_notifier",
    "test_free_after_grace_period": "free_notifier waits for the SRCU readers present at the last put, and "
    "synchronize waits for free_notifier",
    "test_no_leak": "after every detach and synchronize nothing is allocated, the device translates nothing and "
    "the mm reference counts are back to where they were",
    "test_start_end_pairing": "every start is ended, and after the end the device can translate again",
    "test_nonblockable_never_sleeps": "callbacks of the OOM reaper's non-blockable ranges complete or refuse "
    "(-EAGAIN) without sleeping",
    "test_coherence": "after each kind of CPU page-table change, no device translation names a stale frame",
    "test_exit_coherence": "after exit the device holds no translation of the mm and maps nothing new",
    "test_release_once_on_exit": "release runs exactly once when the mm exits while attached",
    "test_no_callback_after_release": "no callback reaches a subscription after its release / teardown",
    "test_detach_after_exit_frees_once": "detaching after the mm exited still frees the subscription exactly once",
    "test_state_machine": "random sequences of attach/detach/map/access/mmap/munmap/mprotect/madvise/fork/exit/"
    "synchronize keep every invariant after every step",
    "test_race_detach_vs_invalidation": "PCT over the last detach racing munmap/madvise finds nothing",
    "test_race_exit_vs_detach": "PCT over exit racing the last detach finds nothing",
    "test_race_attach_vs_exit": "PCT over an attach racing the owner's exit finds nothing",
    "test_race_nonblock_vs_access": "PCT over the OOM reaper racing device accesses finds nothing",
    "test_race_invalidation_vs_access": "PCT over madvise and migration racing device accesses finds nothing",
    "test_interval_sequence_parity": "(interval drivers) the mm's sequence is even when idle, grows through each "
    "hit and every cur_seq passed to invalidate is odd (inv. 17)",
    "test_interval_deferred_changes_at_last_end": "(interval drivers) an insert during an active hit is deferred "
    "and applied by the last active range's end, not before; the tree never changes while the sequence is odd "
    "(inv. 18)",
    "test_interval_every_start_counted": "(interval drivers) every start, hit or miss, counts as active until its "
    "end; the sequence goes even only at the last end (inv. 19)",
    "test_interval_one_invalidate_per_intersecting_subscription": "(interval drivers) a range calls invalidate "
    "once on each subscription of the tree as it began whose [start, last] intersects [range.start, "
    "range.end - 1], in address order, and not on one inserted later (inv. 20)",
    "test_interval_read_begin_and_retry": "(interval drivers) read_begin waits exactly while an invalidation that "
    "set its subscription's sequence runs; read_retry is true iff set_seq ran since read_begin (inv. 21)",
    "test_interval_nothing_after_remove": "(interval drivers) detach removes every interval subscription; no "
    "invalidate reaches them afterwards and the mm pins are dropped (inv. 22)",
    "test_interval_release_at_exit": "(interval drivers) at exit each subscription gets exactly one blockable "
    "RELEASE invalidate over [0, ULONG_MAX) (inv. 23)",
    "test_default_config_valid": "the config model builds from defaults and is a DriverConfig",
    "test_unknown_config_key_rejected": "an unknown key is a ConfigError naming driver and key",
    "test_wrong_config_type_rejected": "a value of the wrong type is a ConfigError naming driver and field",
    "test_config_schema_exports": "the config model's JSON schema exports and lists every field",
    "test_entry_point_name_matches": "the entry-point name equals the driver's declared name",
    "test_version_declared": "the driver declares a version and its distribution has one",
    "test_import_is_quiet": "importing the plugin configures no logging and starts no thread",
}

__all__ = ["CHECKS"]
