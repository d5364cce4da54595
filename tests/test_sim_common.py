"""What the simulators share: the create ledger, seeded rolls and the busiest second."""

from __future__ import annotations

import random

from bulk._sim._common import Ledger, busiest_second
from bulk._sim.gongji import GongjiSim
from bulk._sim.ray import RaySim
from bulk._sim.stub import StubService
from bulk._sim.yuanrong import YuanrongSim


def test_busiest_second_counts_the_fullest_one_second_window() -> None:
    assert 0 == busiest_second([])
    assert 3 == busiest_second([0.0, 0.1, 0.9, 1.0, 1.95, 3.0])
    assert 1 == busiest_second([0.0, 1.0, 2.0])


def test_the_ledger_counts_creates_and_their_first_and_last_time() -> None:
    ledger = Ledger()
    ledger.count_create("a", 5.0)
    ledger.count_create("a", 6.0)
    ledger.count_create("b", 7.5)
    assert {"a": 2, "b": 1} == ledger.creates
    assert (5.0, 7.5) == (ledger.first_create, ledger.last_create)


def test_rolls_are_seeded_and_a_zero_rate_never_draws() -> None:
    a, b = Ledger(rng=random.Random(3)), Ledger(rng=random.Random(3))
    assert [a.roll(0.5) for _ in range(20)] == [b.roll(0.5) for _ in range(20)]
    state = a.rng.getstate()
    assert not a.roll(0.0)
    assert state == a.rng.getstate()


def test_every_simulator_keeps_the_shared_ledger() -> None:
    for sim in (GongjiSim(), RaySim(), StubService(), YuanrongSim()):
        assert isinstance(sim, Ledger)
        assert {} == sim.creates
        assert sim.first_create is None


def test_an_outage_is_a_502_or_a_dropped_connection_in_that_order() -> None:
    from aiohttp.test_utils import make_mocked_request

    request = make_mocked_request("GET", "/api/jobs")
    ledger = Ledger(rng=random.Random(1))
    assert ledger.outage(request, 0.0, 0.0) is None
    bad_gateway = ledger.outage(request, 1.0, 1.0)
    assert bad_gateway is not None
    assert 502 == bad_gateway.status
    reset = ledger.outage(request, 0.0, 1.0)
    assert reset is not None
    assert 500 == reset.status
    assert request.transport is not None
    assert request.transport.close.called  # type: ignore[attr-defined]
