"""The resume rule (DESIGN §2), to the off-by-one."""

from __future__ import annotations

import pytest

from app.errors import InvalidReplayId
from app.model import Window
from app.recovery import MAX_REPLAY_ID, Gap, Recovered, parse_position, recover

# Events 110, 120 and 130 retained; 100 was the newest one evicted.
RETAINED = Window(earliest=110, latest=130, low_water=100, count=3)
# Nothing evicted yet: every position from 0 up is resumable.
UNTRIMMED = Window(earliest=110, latest=130, low_water=0, count=3)
# Every event expired: the top and the low-water mark are kept, nothing is retained.
EXPIRED = Window(earliest=None, latest=130, low_water=130, count=0)
# Nothing ever published in a store born at 50.
NEVER_USED = Window.unused(50)


@pytest.mark.parametrize(
    ("requested", "window", "expected"),
    [
        pytest.param(130, RETAINED, Recovered(after=130), id="at-latest"),
        pytest.param(100, RETAINED, Recovered(after=100), id="at-low-water-mark"),
        pytest.param(110, RETAINED, Recovered(after=110), id="at-earliest-retained"),
        pytest.param(115, RETAINED, Recovered(after=115), id="between-two-retained-ids"),
        pytest.param(105, RETAINED, Recovered(after=105), id="between-low-water-and-earliest"),
        pytest.param(129, RETAINED, Recovered(after=129), id="just-below-latest"),
        pytest.param(-1, RETAINED, Recovered(after=130), id="new-only-starts-at-latest"),
        pytest.param(-2, RETAINED, Recovered(after=100), id="all-retained-starts-at-low-water"),
        pytest.param(0, UNTRIMMED, Recovered(after=0), id="zero-before-any-eviction"),
        pytest.param(-2, UNTRIMMED, Recovered(after=0), id="all-retained-before-any-eviction"),
        pytest.param(50, NEVER_USED, Recovered(after=50), id="empty-channel-from-its-birth"),
        pytest.param(-1, NEVER_USED, Recovered(after=50), id="empty-channel-new-only"),
        pytest.param(-2, NEVER_USED, Recovered(after=50), id="empty-channel-all-retained"),
        pytest.param(130, EXPIRED, Recovered(after=130), id="expired-at-latest"),
        pytest.param(-1, EXPIRED, Recovered(after=130), id="expired-new-only"),
        pytest.param(-2, EXPIRED, Recovered(after=130), id="expired-all-retained"),
    ],
)
def test_resumable_positions(requested: int, window: Window, expected: Recovered) -> None:
    assert recover(requested, window) == expected


@pytest.mark.parametrize(
    ("requested", "window", "expected"),
    [
        pytest.param(
            99,
            RETAINED,
            Gap(requested=99, earliest=110, latest=130, resume_after=100),
            id="one-below-low-water-mark",
        ),
        pytest.param(
            0,
            RETAINED,
            Gap(requested=0, earliest=110, latest=130, resume_after=100),
            id="zero-after-eviction",
        ),
        pytest.param(
            131,
            RETAINED,
            Gap(requested=131, earliest=110, latest=130, resume_after=100),
            id="one-above-latest",
        ),
        pytest.param(
            131,
            UNTRIMMED,
            Gap(requested=131, earliest=110, latest=130, resume_after=0),
            id="above-latest-before-any-eviction",
        ),
        pytest.param(
            5,
            NEVER_USED,
            Gap(requested=5, earliest=None, latest=50, resume_after=50),
            id="empty-channel-position-from-before-its-store",
        ),
        pytest.param(
            0,
            NEVER_USED,
            Gap(requested=0, earliest=None, latest=50, resume_after=50),
            id="empty-channel-from-zero",
        ),
        pytest.param(
            129,
            EXPIRED,
            Gap(requested=129, earliest=None, latest=130, resume_after=130),
            id="expired-below-latest",
        ),
        pytest.param(
            131,
            EXPIRED,
            Gap(requested=131, earliest=None, latest=130, resume_after=130),
            id="expired-above-latest",
        ),
    ],
)
def test_unrecoverable_positions_report_a_gap(
    requested: int, window: Window, expected: Gap
) -> None:
    assert recover(requested, window) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1", -1),
        ("-2", -2),
        ("0", 0),
        (" 42 ", 42),
        ("1700000000123456", 1_700_000_000_123_456),
        ("9007199254740991", 9_007_199_254_740_991),
    ],
)
def test_parse_position_accepts(text: str, expected: int) -> None:
    assert parse_position(text) == expected


def test_largest_position_is_just_below_two_to_the_53() -> None:
    assert MAX_REPLAY_ID == 2**53 - 1


@pytest.mark.parametrize(
    "text",
    [
        "-3",
        "-100",
        "9007199254740992",
        "99999999999999999999",
        "999999999999999999999",
        "abc",
        "1.5",
        "1e3",
        "1_000",
        "0x10",
        "",
        "   ",
        "+5",
        "--1",
        "4 2",
        "٤٢",
    ],
)
def test_parse_position_refuses(text: str) -> None:
    with pytest.raises(InvalidReplayId):
        parse_position(text)
