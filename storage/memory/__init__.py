"""The embedded default: everything in this process (single node, single worker)."""

from storage.memory.catalog import MemoryCatalog
from storage.memory.engine import MemoryEngine

__all__ = ["MemoryCatalog", "MemoryEngine"]
