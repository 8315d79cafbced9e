"""Which channels a connect reads (`plan`): the session's channels in name order from its sweep,
wrapping round, at most `max_reads` of them, each with the position to read after; found by
binary search in the tenant's sorted names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.bayeux.targets import matching, plan
from app.channels import parse_pattern
from app.sessions import Coverage, SessionRecord

NAMES = sorted(
    [
        "/event/A",
        "/event/B",
        "/event/B/deep",
        "/event/C",
        "/event/orders/1",
        "/event/orders/2",
        "/event/orders/2/x",
        "/event/ordersX",
        "/event-other/A",
    ]
)


def session(
    subscriptions: dict[str, int], sweep: str = "", positions: dict[str, int] | None = None
) -> SessionRecord:
    return SessionRecord(
        "client",
        "acme",
        "owner",
        subscriptions=subscriptions,
        positions=positions or {},
        sweep=sweep,
    )


def targets_of(record: SessionRecord, max_reads: int = 100) -> tuple[dict[str, int], str | None]:
    planned = plan(record, Coverage.of(record.subscriptions), NAMES, max_reads)
    return planned.after, planned.following


def test_wildcards_and_channels_merge_in_name_order_each_once() -> None:
    record = session(
        {"/event/*": 1000, "/event/orders/*": 2000, "/event/B": 5, "/event/New": 7},
        positions={"/event/C": 42},
    )

    after, following = targets_of(record)

    assert list(after.items()) == [
        ("/event/A", 999),  # through the wildcard: from its subscription time
        ("/event/B", 4),  # its own subscription: from its position, else its time
        ("/event/C", 42),
        ("/event/New", 6),  # subscribed by name, no event yet: read all the same
        ("/event/orders/1", 1999),
        ("/event/orders/2", 1999),
        ("/event/ordersX", 999),
    ]
    assert following is None


def test_reads_start_at_the_sweep_wrap_round_and_stop_at_max_reads() -> None:
    record = session({"/event/**": 1}, sweep="/event/C")

    assert targets_of(record, max_reads=3) == (
        {"/event/C": 0, "/event/orders/1": 0, "/event/orders/2": 0},
        "/event/orders/2/x",
    )
    assert list(targets_of(record)[0]) == [
        "/event/C",
        "/event/orders/1",
        "/event/orders/2",
        "/event/orders/2/x",
        "/event/ordersX",
        "/event/A",
        "/event/B",
        "/event/B/deep",
    ]


def test_a_channel_created_after_the_names_were_read_starts_at_its_wildcard() -> None:
    record = session({"/event/*": 1000, "/event/orders/**": 500, "/event/Mine": 3})
    planned = plan(record, Coverage.of(record.subscriptions), NAMES, 100)

    assert planned.start_of_new("/event/orders/9", record) == 499
    assert planned.start_of_new("/event/A", record) is None  # known: read in turn
    assert planned.start_of_new("/event/Mine", record) is None  # its own subscription
    assert planned.start_of_new("/event/x/y", record) is None  # no wildcard matches


def test_matching_finds_a_patterns_channels_among_the_sorted_names() -> None:
    assert list(matching(NAMES, parse_pattern("/event/orders/*"))) == [
        "/event/orders/1",
        "/event/orders/2",
    ]
    assert list(matching(NAMES, parse_pattern("/event/B/**"))) == ["/event/B/deep"]
    assert list(matching(NAMES, parse_pattern("/event/B"))) == ["/event/B"]
    assert list(matching(NAMES, parse_pattern("/event/Z"))) == []


segment = st.sampled_from(["a", "b", "ab", "b0", "Z", "_", "~", "a-b", "a.b"])
channel = st.lists(segment, min_size=2, max_size=4).map(lambda parts: "/" + "/".join(parts))
pattern = st.tuples(st.lists(segment, min_size=1, max_size=3), st.sampled_from(["*", "**"])).map(
    lambda p: "/" + "/".join([*p[0], p[1]])
)


@given(
    names=st.lists(channel, unique=True, max_size=30),
    subscriptions=st.dictionaries(channel | pattern, st.integers(1, 10**6), max_size=5),
    sweep=st.just("") | channel,
    max_reads=st.integers(1, 40),
)
def test_a_plan_is_the_covered_channels_in_turn_from_the_sweep(
    names: list[str], subscriptions: dict[str, int], sweep: str, max_reads: int
) -> None:
    record = session(subscriptions, sweep=sweep)
    coverage = Coverage.of(subscriptions)
    followed = sorted({name for name in [*names, *coverage.exact] if coverage.covers(name)})
    in_turn = [n for n in followed if n >= sweep] + [n for n in followed if n < sweep]

    planned = plan(record, coverage, sorted(names), max_reads)

    def turn(name: str) -> tuple[bool, str]:
        return name < sweep, name

    read = list(planned.after)
    assert read == in_turn[: len(read)]
    assert len(read) <= max_reads
    if planned.following is None:
        assert read == in_turn
    else:
        # The next connect, starting there, skips none of the channels not read now.
        assert all(turn(name) < turn(planned.following) for name in read)
        assert all(turn(planned.following) <= turn(name) for name in in_turn[len(read) :])


def test_a_name_subscribed_after_a_wildcard_covering_it_starts_at_the_wildcard() -> None:
    record = session({"/event/*": 1000, "/event/B": 3000})

    after, _ = targets_of(record)

    assert after["/event/B"] == 999  # what the wildcard followed since is not skipped
