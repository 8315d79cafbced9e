"""`apply_change`, the pure rule every engine applies atomically to a Bayeux session, and
`Coverage`, what a session's subscriptions select."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.sessions import Coverage, SessionChange, SessionRecord, apply_change

A = "/event/A__e"
B = "/event/B__e"

BASE = SessionRecord(
    client_id="c1",
    tenant="acme",
    owner="client-1",
    ack=True,
    connected=False,
    batch=3,
    subscriptions={A: 100},
    positions={A: 50, B: 70},
    pending={3: {A: 60}},
)


def test_an_empty_change_changes_nothing() -> None:
    assert apply_change(BASE, SessionChange()) == BASE


def test_identity_fields_are_kept() -> None:
    updated = apply_change(BASE, SessionChange(subscribe={B: 200}, connected=True))

    assert (updated.client_id, updated.tenant, updated.owner, updated.ack) == (
        "c1",
        "acme",
        "client-1",
        True,
    )


def test_the_original_record_is_never_modified() -> None:
    before = (
        dict(BASE.subscriptions),
        dict(BASE.positions),
        {k: dict(v) for k, v in BASE.pending.items()},
    )

    apply_change(
        BASE,
        SessionChange(
            subscribe={B: 1},
            unsubscribe=(A,),
            set_positions={A: 1},
            advance={B: 99},
            stage={A: 80},
            commit_through=4,
            connected=True,
        ),
    )

    after = (
        dict(BASE.subscriptions),
        dict(BASE.positions),
        {k: dict(v) for k, v in BASE.pending.items()},
    )
    assert after == before
    assert BASE.batch == 3
    assert BASE.connected is False


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(SessionChange(subscribe={B: 200}), {A: 100, B: 200}, id="add"),
        pytest.param(SessionChange(subscribe={A: 300}), {A: 300}, id="resubscribe-restarts"),
        pytest.param(SessionChange(unsubscribe=(A,)), {}, id="remove"),
        pytest.param(SessionChange(unsubscribe=("/event/None__e",)), {A: 100}, id="remove-absent"),
        pytest.param(
            SessionChange(subscribe={B: 200}, unsubscribe=(B,)),
            {A: 100},
            id="unsubscribe-applies-after-subscribe",
        ),
    ],
)
def test_subscriptions(change: SessionChange, expected: dict[str, int]) -> None:
    assert apply_change(BASE, change).subscriptions == expected


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(SessionChange(set_positions={A: 10}), {A: 10, B: 70}, id="set-backwards"),
        pytest.param(SessionChange(set_positions={A: 90}), {A: 90, B: 70}, id="set-forwards"),
        pytest.param(SessionChange(advance={A: 51}), {A: 51, B: 70}, id="advance-forwards"),
        pytest.param(SessionChange(advance={A: 49}), {A: 50, B: 70}, id="advance-never-back"),
        pytest.param(SessionChange(advance={A: 50}), {A: 50, B: 70}, id="advance-to-same"),
        pytest.param(
            SessionChange(advance={"/event/C__e": 0}),
            {A: 50, B: 70, "/event/C__e": 0},
            id="advance-new-channel-from-zero",
        ),
        pytest.param(
            SessionChange(set_positions={A: 10}, advance={A: 20}),
            {A: 20, B: 70},
            id="advance-applies-after-set",
        ),
        pytest.param(
            SessionChange(set_positions={A: 10}, advance={A: 5}),
            {A: 10, B: 70},
            id="advance-below-the-new-set-position-ignored",
        ),
    ],
)
def test_positions(change: SessionChange, expected: dict[str, int]) -> None:
    assert apply_change(BASE, change).positions == expected


def test_stage_records_the_batch_without_moving_positions() -> None:
    updated = apply_change(BASE, SessionChange(stage={A: 80, B: 90}))

    assert updated.batch == 4
    assert updated.pending == {3: {A: 60}, 4: {A: 80, B: 90}}
    assert updated.positions == BASE.positions


def test_staged_positions_are_copied() -> None:
    reached = {A: 80}
    updated = apply_change(BASE, SessionChange(stage=reached))

    reached[A] = 1

    assert updated.pending[4] == {A: 80}


@pytest.mark.parametrize(
    ("commit_through", "positions", "pending"),
    [
        pytest.param(2, {A: 50, B: 70}, {3: {A: 60}, 4: {A: 80}, 5: {B: 95}}, id="older"),
        pytest.param(3, {A: 60, B: 70}, {4: {A: 80}, 5: {B: 95}}, id="first"),
        pytest.param(4, {A: 80, B: 70}, {5: {B: 95}}, id="middle"),
        pytest.param(5, {A: 80, B: 95}, {}, id="all"),
        pytest.param(9, {A: 80, B: 95}, {}, id="beyond"),
        pytest.param(-1, {A: 50, B: 70}, {3: {A: 60}, 4: {A: 80}, 5: {B: 95}}, id="none-yet"),
    ],
)
def test_commit_through_commits_every_batch_up_to_it(
    commit_through: int, positions: dict[str, int], pending: dict[int, dict[str, int]]
) -> None:
    staged = apply_change(BASE, SessionChange(stage={A: 80}))
    staged = apply_change(staged, SessionChange(stage={B: 95}))

    updated = apply_change(staged, SessionChange(commit_through=commit_through))

    assert updated.positions == positions
    assert updated.pending == pending
    assert updated.batch == 5


def test_commit_never_moves_a_position_back() -> None:
    record = apply_change(replace(BASE, pending={}), SessionChange(stage={A: 10}))

    updated = apply_change(record, SessionChange(commit_through=4))

    assert updated.positions[A] == 50


def test_commit_after_a_resubscribe_keeps_the_later_set_position() -> None:
    """A subscribe with a replay position may move a channel back; a batch acknowledged
    later only moves it forward from there."""
    record = apply_change(BASE, SessionChange(set_positions={A: 5}))

    updated = apply_change(record, SessionChange(commit_through=3))

    assert updated.positions[A] == 60


def test_stage_then_commit_in_one_change_commits_the_new_batch() -> None:
    updated = apply_change(BASE, SessionChange(stage={B: 99}, commit_through=4))

    assert updated.positions == {A: 60, B: 99}
    assert updated.pending == {}
    assert updated.batch == 4


@pytest.mark.parametrize(
    ("before", "change", "after"),
    [
        (False, None, False),
        (True, None, True),
        (False, True, True),
        (True, False, False),
    ],
)
def test_connected_changes_only_when_given(before: bool, change: bool | None, after: bool) -> None:
    record = apply_change(BASE, SessionChange(connected=before))

    assert apply_change(record, SessionChange(connected=change)).connected is after


def test_unsubscribe_drops_positions_no_subscription_covers_any_more() -> None:
    record = replace(
        BASE,
        subscriptions={"/event/*": 1, "/event/**": 1, A: 1},
        positions={A: 50, B: 70, "/event/deep/C__e": 80},
        pending={3: {A: 60, B: 75, "/event/deep/C__e": 85}},
    )

    narrower = apply_change(record, SessionChange(unsubscribe=("/event/**",)))
    assert narrower.positions == {A: 50, B: 70}
    assert narrower.pending == {3: {A: 60, B: 75}}

    only_a = apply_change(narrower, SessionChange(unsubscribe=("/event/*",)))
    assert only_a.positions == {A: 50}
    assert only_a.pending == {3: {A: 60}}

    nothing = apply_change(only_a, SessionChange(unsubscribe=(A,)))
    assert (nothing.positions, nothing.subscriptions) == ({}, {})
    # A later commit of the old batch brings nothing back.
    assert apply_change(nothing, SessionChange(commit_through=3)).positions == {}


def test_unsubscribing_one_of_two_covering_patterns_keeps_the_positions() -> None:
    record = replace(BASE, subscriptions={"/event/*": 1, "/event/B__e": 1}, positions={B: 70})

    updated = apply_change(record, SessionChange(unsubscribe=("/event/*",)))

    assert updated.positions == {B: 70}


def test_unsubscribing_nothing_subscribed_leaves_positions_alone() -> None:
    updated = apply_change(BASE, SessionChange(unsubscribe=("/event/None__e",)))

    assert updated.positions == BASE.positions


def test_coverage_selects_named_channels_and_wildcard_matches_from_their_first_subscription() -> (
    None
):
    coverage = Coverage.of(
        {A: 1, "/event/*": 300, "/event/**": 200, "/event/deep/*": 100, "not a pattern": 5}
    )

    assert coverage.exact == frozenset({A, "not a pattern"})
    assert [(pattern.text, since) for pattern, since in coverage.wildcards] == [
        ("/event/*", 300),
        ("/event/**", 200),
        ("/event/deep/*", 100),
    ]
    assert [coverage.covers(c) for c in (A, "not a pattern", "/event/x/y", "/other/x")] == [
        True,
        True,
        True,
        False,
    ]
    assert coverage.wildcard_since(B) == 200
    assert coverage.wildcard_since("/event/deep/x") == 100
    assert coverage.wildcard_since("/other/x") is None
