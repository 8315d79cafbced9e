"""Every Redis key and pub/sub channel replaybus uses, built in this one place.

Keys are prefixed `rb:` and carry their tenant; a channel's keys share the hash tag
`{<tenant>:<channel>}`, so a publish script touches one Redis Cluster slot. Tenant ids are
`[A-Za-z0-9_-]` and channel names cannot contain `{`, `}` or `:`, so tags never collide.
"""

from __future__ import annotations

import binascii
import functools

from app.model import ChannelKey

__all__ = [
    "birth_key",
    "channel_from_key",
    "channel_from_live",
    "channel_keys",
    "channels_of",
    "claims_of",
    "drop_progress",
    "family_key",
    "live_channel",
    "live_tenant",
    "rate_of",
    "session_key",
    "sessions_of",
    "slot_tags",
    "streams_of",
    "tag_of",
    "tenant_pattern",
]

PREFIX = "rb:"
_LIVE_SUFFIX = "}:live"


def _tag(tenant: str, name: str) -> str:
    return "{" + tenant + ":" + name + "}"


def channel_keys(key: ChannelKey) -> list[str]:
    """The keys of one channel, in the order the engine script expects them: the event stream,
    the meta hash (top, low-water mark, retention), the idempotency hash and its expiry index."""
    tag = PREFIX + _tag(key.tenant, key.name)
    return [tag + ":stream", tag + ":meta", tag + ":idem", tag + ":idem-expiry"]


_SLOTS = 16384  # Redis Cluster's hash slots


def birth_key(key: ChannelKey, *, cluster: bool) -> str:
    """The key holding the store's birth mark for a channel's data: one key on a single Redis;
    on a Cluster, one per hash slot, in the channel's own slot (a script may only touch one
    slot, and the mark must be lost with the data it vouches for)."""
    if not cluster:
        return PREFIX + "birth"
    slot = binascii.crc_hqx(f"{key.tenant}:{key.name}".encode(), 0) % _SLOTS  # its tag's
    return PREFIX + "birth:{" + slot_tags()[slot] + "}"


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short hash tag that Redis maps to it (CRC16 of the tag, modulo
    16384). Found by search, once per process: about 0.4 s, so a Cluster engine calls this on
    a worker thread when it starts."""
    tags: list[str | None] = [None] * _SLOTS
    missing = _SLOTS
    candidate = 0
    while missing:
        tag = format(candidate, "x")
        slot = binascii.crc_hqx(tag.encode(), 0) % _SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        candidate += 1
    return tuple(tag for tag in tags if tag is not None)


def live_channel(key: ChannelKey) -> str:
    """The pub/sub channel announcing a channel's newly stored events."""
    return PREFIX + _tag(key.tenant, key.name) + ":live"


def live_tenant(tenant: str) -> str:
    """The pub/sub channel announcing every newly stored event of a tenant, each prefixed by
    its `live_channel` (wildcard listeners match channel names themselves)."""
    return PREFIX + "{" + tenant + "}:announce"


def channel_from_live(channel: str) -> ChannelKey | None:
    if not channel.startswith(PREFIX + "{") or not channel.endswith(_LIVE_SUFFIX):
        return None
    tenant, _, name = channel[len(PREFIX) + 1 : -len(_LIVE_SUFFIX)].partition(":")
    return ChannelKey(tenant, name) if tenant and name else None


def channels_of(tenant: str) -> str:
    """The set of a tenant's channel names."""
    return PREFIX + "{" + tenant + "}:channels"


def streams_of(tenant: str) -> str:
    """A sorted set of a tenant's live streams (SSE subscribers), scored by expiry (µs); same
    slot as `sessions_of`, so one script counts both."""
    return PREFIX + "{" + tenant + "}:streams"


def rate_of(tenant: str) -> str:
    """A hash holding the tenant's publish allowance and when it was last refilled."""
    return PREFIX + "{" + tenant + "}:rate"


def session_key(client_id: str) -> str:
    return PREFIX + "{session:" + client_id + "}"


def sessions_of(tenant: str) -> str:
    """A sorted set of a tenant's Bayeux sessions, scored by expiry (µs)."""
    return PREFIX + "{" + tenant + "}:sessions"


def tenant_pattern(tenant: str) -> str:
    """The SCAN pattern matching every key of `tenant` (its channels' keys `rb:{<tenant>:/...`
    and its own `rb:{<tenant>}:...`) and no other key: tenant ids hold no glob character, `:`
    or `}`, and channel names start with `/` (so the tenant named `session` never matches the
    session keys `rb:{session:<id>}`)."""
    return PREFIX + "{" + tenant + "[:}][/:]*"


def drop_progress(tenant: str) -> str:
    """Where an unfinished drop of `tenant` keeps its SCAN cursors: outside the tenant's own
    keys, so the drop never unlinks it."""
    return PREFIX + "drop:" + tenant


def tag_of(key: str) -> str:
    """A key's hash tag: keys with the same tag share a Redis Cluster slot."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start else key


def channel_from_key(key: str) -> ChannelKey | None:
    """The channel whose key this is (one of `channel_keys`), else None."""
    if not key.startswith(PREFIX + "{"):
        return None
    tenant, _, name = tag_of(key).partition(":")
    return ChannelKey(tenant, name) if tenant and name.startswith("/") else None


def claims_of(owner: str) -> str:
    """A sorted set of an owner's (a tenant's) single-use names (`Engine.claim_once`), scored
    by expiry (µs). Outside the tenant's own keys, so deleting the tenant does not forget
    which of its assertions were used."""
    return PREFIX + "claims:{" + owner + "}"


def family_key(family: str) -> str:
    """A refresh-token family's current generation (`Engine.advance_family`). Not tenant data:
    `family` is a random id; named as refresh tokens' single-use claims were before families
    (the family of such a token is its id), so a token used before is still seen as used."""
    return PREFIX + "claim:refresh:" + family
