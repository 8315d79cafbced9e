"""Where a subscriber keeps the last ReplayId it has processed, per channel."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

__all__ = ["CheckpointStore", "FileCheckpoints", "MemoryCheckpoints"]


class CheckpointStore(Protocol):
    async def load(self, channel: str) -> int | None: ...

    async def save(self, channel: str, replay_id: int) -> None: ...


class MemoryCheckpoints:
    """Positions for the life of the process (a reconnect resumes; a restart does not)."""

    def __init__(self) -> None:
        self._positions: dict[str, int] = {}

    async def load(self, channel: str) -> int | None:
        return self._positions.get(channel)

    async def save(self, channel: str, replay_id: int) -> None:
        self._positions[channel] = replay_id


class FileCheckpoints:
    """Positions in a JSON file, replaced atomically on every save, so a consumer restarted
    after a crash resumes after the last event it finished."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {str(key): int(value) for key, value in data.items()}

    def _write(self, positions: dict[str, int]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".checkpoints-")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(positions, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path)

    async def load(self, channel: str) -> int | None:
        async with self._lock:
            return (await asyncio.to_thread(self._read)).get(channel)

    async def save(self, channel: str, replay_id: int) -> None:
        async with self._lock:
            positions = await asyncio.to_thread(self._read)
            positions[channel] = replay_id
            await asyncio.to_thread(self._write, positions)
