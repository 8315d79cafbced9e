"""Which channels one `/meta/connect` reads: the session's concrete channels and the tenant's
channels its wildcards match, in name order from where the previous connect stopped, at most
`max_reads` of them. Wildcard matches are found by binary search in the tenant's sorted names
(a trailing-wildcard pattern's channels share its prefix, so they are adjacent), so a connect
costs what it reads, not how many channels the tenant has."""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from app.channels import ChannelPattern
from app.sessions import Coverage, SessionRecord

__all__ = ["Targets", "matching", "plan"]

#: Names one connect may look at per channel it may read, so a pattern whose prefix holds many
#: channels it does not match (deeper ones, for `*`) is gone through over several connects.
_SCANNED_PER_READ = 16


@dataclass(frozen=True, slots=True)
class Targets:
    """The channels one connect reads, in order, each with the ReplayId to read after
    (`after`). `following`: where the next connect starts if this one reads them all; None
    when they are every channel the session follows. `names`: the tenant's sorted channel
    names they were chosen from."""

    after: dict[str, int]
    following: str | None
    coverage: Coverage
    names: Sequence[str]

    def start_of_new(self, channel: str, session: SessionRecord) -> int | None:
        """For a channel that did not exist when `names` was read: the ReplayId its delivery
        starts after, from the first matching wildcard's subscription time (ReplayIds are at
        least their publish time in µs). None for a channel that did exist, or that no
        wildcard matches: what is not read now is read in turn by a later connect."""
        if channel in self.coverage.exact or _contains(self.names, channel):
            return None
        since = self.coverage.wildcard_since(channel)
        return None if since is None else session.positions.get(channel, since - 1)


def plan(
    session: SessionRecord, coverage: Coverage, names: Sequence[str], max_reads: int
) -> Targets:
    """The next channels to read after `session.sweep` ("" = the first), wrapping round once:
    at most `max_reads` channels, looking at most at `_SCANNED_PER_READ` times as many names.
    A channel starts after its position; without one (a `-1` subscription to a name a
    wildcard already covered, a channel a wildcard reaches), after the earliest subscription
    time among its own and its matching wildcards'."""
    exact = sorted(coverage.exact)
    spans = _spans(names, coverage)
    start = session.sweep
    after: dict[str, int] = {}
    in_turn = itertools.chain(
        _in_order(names, spans, exact, start, None), _in_order(names, spans, exact, "", start)
    )
    for scanned, name in enumerate(in_turn):
        if len(after) >= max_reads or scanned >= _SCANNED_PER_READ * max_reads:
            return Targets(after, name, coverage, names)
        wildcard_since = coverage.wildcard_since(name)
        if name in coverage.exact:
            own = session.subscriptions[name]
            # A wildcard covering it may have followed it from earlier.
            since = own if wildcard_since is None else min(own, wildcard_since)
            after[name] = session.positions.get(name, since - 1)
        elif wildcard_since is not None:
            after[name] = session.positions.get(name, wildcard_since - 1)
    return Targets(after, None, coverage, names)


def matching(names: Sequence[str], pattern: ChannelPattern) -> Iterator[str]:
    """The names of sorted `names` that `pattern` selects."""
    low, high = _span(names, pattern)
    return (names[i] for i in range(low, high) if pattern.matches(names[i]))


def _span(names: Sequence[str], pattern: ChannelPattern) -> tuple[int, int]:
    """The index range of `names` under the pattern's prefix (for a name, just itself)."""
    if not pattern.is_wildcard:
        low = bisect.bisect_left(names, pattern.text)
        return low, low + int(_contains(names, pattern.text))
    prefix = "/".join(("", *pattern.prefix, ""))
    # Every name under the prefix sorts before the prefix with its "/" raised to "0".
    return bisect.bisect_left(names, prefix), bisect.bisect_left(names, prefix[:-1] + "0")


def _spans(names: Sequence[str], coverage: Coverage) -> list[tuple[int, int]]:
    """The index ranges of `names` some wildcard's prefix covers, merged, in order."""
    spans: list[tuple[int, int]] = []
    for low, high in sorted(_span(names, pattern) for pattern, _ in coverage.wildcards):
        if spans and low <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], high))
        elif low < high:
            spans.append((low, high))
    return spans


def _in_order(
    names: Sequence[str],
    spans: list[tuple[int, int]],
    exact: list[str],
    low: str,
    high: str | None,
) -> Iterator[str]:
    """From `low` (inclusive) to `high` (exclusive; None: the end), ascending and each once:
    the names within `spans`, merged with the `exact` ones."""
    first = bisect.bisect_left(names, low)
    last = len(names) if high is None else bisect.bisect_left(names, high)
    spanned = (names[i] for start, stop in spans for i in range(max(start, first), min(stop, last)))
    exact_end = len(exact) if high is None else bisect.bisect_left(exact, high)
    previous = None
    for name in heapq.merge(spanned, exact[bisect.bisect_left(exact, low) : exact_end]):
        if name != previous:
            yield name
            previous = name


def _contains(names: Sequence[str], name: str) -> bool:
    index = bisect.bisect_left(names, name)
    return index < len(names) and names[index] == name
