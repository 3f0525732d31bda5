"""Fault injection: the Nth call fails, probabilities are seeded, steps draw independently."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mmu_notifier_amdkfd.config import FaultPoint, KfdFaults
from mmu_notifier_amdkfd.faults import STEPS, FaultInjector, Step


@given(nth=st.integers(1, 30), calls=st.integers(0, 60), step=st.sampled_from(STEPS))
def test_nth_fails_exactly_the_nth_call(nth: int, calls: int, step: Step) -> None:
    injector = FaultInjector(KfdFaults.model_validate({step: FaultPoint(nth=nth)}))
    failed = [call for call in range(1, calls + 1) if injector.fail(step)]
    assert failed == ([nth] if calls >= nth else [])
    assert injector.calls(step) == calls and injector.failed(step) == len(failed)


@given(steps=st.lists(st.sampled_from(STEPS), max_size=50))
def test_a_step_without_a_fault_point_never_fails(steps: list[Step]) -> None:
    injector = FaultInjector(KfdFaults())
    assert not any(injector.fail(step) for step in steps)


def test_probability_one_fails_every_call() -> None:
    injector = FaultInjector(KfdFaults(cwsr=FaultPoint(probability=1.0)))
    assert all(injector.fail("cwsr") for _ in range(100))


def test_probability_fails_about_that_often() -> None:
    injector = FaultInjector(KfdFaults(pqm_init=FaultPoint(probability=0.3, seed=11)))
    rate = sum(injector.fail("pqm_init") for _ in range(4000)) / 4000
    assert 0.27 < rate < 0.33


@given(
    seed=st.integers(0, 2**32),
    probability=st.floats(0.05, 0.95),
    others=st.lists(st.sampled_from(("pqm_init", "init_apertures")), max_size=40),
)
def test_draws_depend_only_on_the_seed_and_the_step_own_calls(
    seed: int, probability: float, others: list[Step]
) -> None:
    spec = FaultPoint(probability=probability, seed=seed)
    faults = KfdFaults(pqm_init=spec, init_apertures=spec, cwsr=spec)
    alone = FaultInjector(faults)
    expected = [alone.fail("cwsr") for _ in range(len(others) + 1)]
    mixed = FaultInjector(faults)
    got = []
    for other in others:
        got.append(mixed.fail("cwsr"))
        mixed.fail(other)
    got.append(mixed.fail("cwsr"))
    assert got == expected
