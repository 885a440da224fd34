"""The deterministic simulation (issue 12): the real engine and the worker's stages on an
in-memory broker, disturbed by crashes at every checkpoint step, duplicated
deliveries and late arrivals, must give the journeys, credits and identities of the
calm, ordered run. Hypothesis draws the seeds and disturbances; a failure prints the
example, and ``@example``/``--hypothesis-seed`` replays it."""

from __future__ import annotations

import random
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.unit.sim.harness import STEPS, Outcome, Plan, arrival, make_events, simulate

#: The rocksdict stores live in memory when the machine has a tmpfs (fsyncs are slow).
TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None
SEEDS = st.integers(min_value=0, max_value=2**16)
CRASHES = st.sets(
    st.tuples(st.integers(min_value=1, max_value=10), st.sampled_from(STEPS)), max_size=4
)
SIM = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
#: For the tests expected to fail until the journey-stage rewrite: no shrinking (slow).
NO_SHRINK = settings(SIM, max_examples=6, phases=[Phase.explicit, Phase.reuse, Phase.generate])


@cache
def calm(seed: int) -> Outcome:
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        return simulate(make_events(seed), Plan(seed=seed), Path(tmp))


def disturbed(seed: int, deliveries_seed: int, plan: Plan, lateness: int, dups: float) -> Outcome:
    rng = random.Random(deliveries_seed)
    deliveries = arrival(make_events(seed), rng, lateness=lateness, duplicates=dups)
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        return simulate(deliveries, plan, Path(tmp))


def assert_same(got: Outcome, want: Outcome) -> None:
    assert got.identities == want.identities, "identities differ from the calm run"
    assert got.journeys == want.journeys, "journeys differ from the calm run"
    assert got.credits == want.credits, "credits differ from the calm run"


def test_the_calm_run_produces_identities_journeys_and_credits() -> None:
    """The harness is not vacuous: merges, conversions and credits do come out."""
    out = calm(3)
    persons = set(out.identities.values())
    assert len(persons) < len({ident for ident in out.identities if ident[0] == "anonymous_id"})
    assert sum(1 for j in out.journeys.values() if j[1]) >= 3
    assert out.credits and all(rows for rows in out.credits.values())


@SIM
@given(
    seed=SEEDS,
    crashes=CRASHES,
    wipe=st.booleans(),
    batch=st.integers(min_value=5, max_value=80),
    every=st.integers(min_value=1, max_value=5),
)
def test_crashes_at_checkpoint_steps_give_the_same_identities(
    seed: int, crashes: set[tuple[int, str]], wipe: bool, batch: int, every: int
) -> None:
    """A crash delivers a random prefix of what was not flushed: some changelog records
    and outputs of the unmarked checkpoint arrive, others do not."""
    plan = Plan(seed=seed, crashes=crashes, wipe=wipe, batch_size=batch, checkpoint_every=every)
    got = disturbed(seed, seed, plan, lateness=0, dups=0.0)
    assert got.identities == calm(seed).identities


@SIM
@given(
    seed=SEEDS,
    crashes=CRASHES,
    wipe=st.booleans(),
    batch=st.integers(min_value=5, max_value=80),
    every=st.integers(min_value=1, max_value=5),
)
def test_crashes_that_lose_what_was_not_flushed_change_nothing(
    seed: int, crashes: set[tuple[int, str]], wipe: bool, batch: int, every: int
) -> None:
    """A crash loses every unflushed message: the restart must produce them again, once
    (no redelivery reaches the journey stage, see the next test)."""
    plan = Plan(
        seed=seed,
        crashes=crashes,
        wipe=wipe,
        batch_size=batch,
        checkpoint_every=every,
        partial=False,
    )
    assert_same(disturbed(seed, seed, plan, lateness=0, dups=0.0), calm(seed))


@SIM
@given(seed=SEEDS, crashes=CRASHES, wipe=st.booleans())
@example(seed=3631, crashes={(3, "changelogs")}, wipe=False)
def test_crashes_with_partial_delivery_give_the_same_journeys_and_credits(
    seed: int, crashes: set[tuple[int, str]], wipe: bool
) -> None:
    plan = Plan(seed=seed, crashes=crashes, wipe=wipe, batch_size=57, checkpoint_every=5)
    got, want = disturbed(seed, seed, plan, lateness=0, dups=0.0), calm(seed)
    assert got.journeys == want.journeys, "journeys differ from the calm run"
    assert got.credits == want.credits, "credits differ from the calm run"


@SIM
@given(seed=SEEDS, crashes=CRASHES, wipe=st.booleans())
def test_duplicated_deliveries_and_crashes_give_the_same_identities(
    seed: int, crashes: set[tuple[int, str]], wipe: bool
) -> None:
    plan = Plan(seed=seed, crashes=crashes, wipe=wipe)
    got = disturbed(seed, seed + 1, plan, lateness=0, dups=0.2)
    assert got.identities == calm(seed).identities


@SIM
@given(seed=SEEDS, crashes=CRASHES)
@example(seed=250, crashes=set())
def test_duplicated_deliveries_give_the_same_journeys_and_credits(
    seed: int, crashes: set[tuple[int, str]]
) -> None:
    plan = Plan(seed=seed, crashes=crashes)
    got, want = disturbed(seed, seed + 1, plan, lateness=0, dups=0.2), calm(seed)
    assert got.journeys == want.journeys, "journeys differ from the calm run"
    assert got.credits == want.credits, "credits differ from the calm run"


@SIM
@given(seed=SEEDS, crashes=CRASHES, lateness=st.integers(min_value=1, max_value=30))
def test_late_arrivals_within_the_lateness_change_nothing(
    seed: int, crashes: set[tuple[int, str]], lateness: int
) -> None:
    plan = Plan(seed=seed, crashes=crashes)
    assert_same(disturbed(seed, seed + 2, plan, lateness=lateness, dups=0.1), calm(seed))


@SIM
@given(
    seed=SEEDS,
    crashes=st.sets(
        st.tuples(st.integers(min_value=2, max_value=12), st.sampled_from(STEPS)),
        min_size=1,
        max_size=4,
    ),
    wipe=st.booleans(),
    every=st.integers(min_value=3, max_value=40),
    age=st.sampled_from([2, 3, 5, 10_000]),
)
def test_snapshots_and_the_janitors_cuts_change_nothing(
    seed: int, crashes: set[tuple[int, str]], wipe: bool, every: int, age: int
) -> None:
    """Snapshots every few records, and at each crash the broker deletes everything
    the checkpoint logs' floors allow (issue 15): the restarts read only what is left,
    with the stores kept or wiped, and give the calm run's answers."""
    plan = Plan(
        seed=seed, crashes=crashes, wipe=wipe, snapshot_min_records=every, snapshot_max_age=age
    )
    got = disturbed(seed, seed + 3, plan, lateness=0, dups=0.1)
    assert_same(got, calm(seed))
    assert got.restored == got.state, "a scratch restore after the cuts lost state"


def test_the_janitor_cuts_in_the_simulation() -> None:
    """The property above is not vacuous: its plans do cut the logs."""
    plan = Plan(seed=7, crashes={(6, STEPS[0]), (12, STEPS[-1])}, snapshot_min_records=3)
    got = disturbed(7, 10, plan, lateness=0, dups=0.1)
    assert got.crashes >= 1 and got.cut > 0
    assert_same(got, calm(7))
    assert got.state and got.restored == got.state
    # With old tables snapshotted too, the checkpoint log itself is cut.
    aged = Plan(seed=7, crashes={(6, STEPS[0])}, snapshot_min_records=3, snapshot_max_age=2)
    got = disturbed(7, 10, aged, lateness=0, dups=0.1)
    assert got.log_cut and got.restored == got.state
    assert_same(got, calm(7))
