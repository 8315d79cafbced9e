"""The neighbour's report says exactly what went wrong for B: the verdicts the hostile suite
relies on, on made-up receipts."""

from __future__ import annotations

from tests.hostile.neighbour import Report, SubscriberReport, _Subscriber

READY, STOP = 100.0, 103.0
SENT = {1: 100.0, 2: 100.5, 3: 101.2, 4: 102.4}


def _report(received: list[tuple[int, float]]) -> SubscriberReport:
    return _Subscriber(received).report(SENT, READY, STOP)


def test_every_event_once_in_order_and_every_second_is_clean() -> None:
    subscriber = _report([(1, 100.1), (2, 100.6), (3, 101.3), (4, 102.5)])
    assert (subscriber.lost, subscriber.duplicates, subscriber.out_of_order) == (0, 0, 0)
    assert subscriber.windows == [2, 1, 1]
    assert Report(4, [], {"sse": subscriber}, {}, tokens=5).problems() == []


def test_losses_duplicates_and_reordering_are_counted() -> None:
    subscriber = _report([(1, 100.1), (3, 100.2), (2, 101.3), (2, 102.5)])
    assert (subscriber.lost, subscriber.duplicates, subscriber.out_of_order) == (1, 1, 2)
    assert Report(4, [], {"sse": subscriber}, {}, tokens=5).problems() == [
        "sse: 1 lost, 1 duplicated, 2 out of order of 4"
    ]


def test_a_second_without_deliveries_is_a_problem_even_when_nothing_is_lost() -> None:
    subscriber = _report([(1, 100.1), (2, 100.6), (3, 102.1), (4, 102.5)])
    assert subscriber.windows == [2, 0, 2]
    problems = Report(4, [], {"bayeux": subscriber}, {}, tokens=5).problems()
    assert problems == ["bayeux: no deliveries in second(s) [1] of [2, 0, 2]"]


def test_errors_are_problems() -> None:
    subscriber = _report([(1, 100.1), (2, 100.6), (3, 101.3), (4, 102.5)])
    report = Report(4, ["publish 3: 503 ..."], {"sse": subscriber}, {}, tokens=5)
    assert report.problems() == ["publish 3: 503 ..."]


def test_a_run_in_which_b_got_no_token_is_a_problem() -> None:
    subscriber = _report([(1, 100.1), (2, 100.6), (3, 101.3), (4, 102.5)])
    report = Report(4, [], {"sse": subscriber}, {}, tokens=0)
    assert report.problems() == ["tokens: B was granted none"]


def test_latency_is_from_publish_sent_to_event_received() -> None:
    subscriber = _report([(1, 100.1), (2, 100.6), (3, 101.3), (4, 102.5)])
    assert subscriber.latency_ms["max"] == 100.0
