"""The production engine: Redis (standalone or Cluster) holds the retention window, the live
fan-out and the Bayeux sessions, so any node can serve any request."""

from storage.redis.engine import RedisEngine

__all__ = ["RedisEngine"]
