"""Running the Node CometD scripts in `tests/node` (the official CometD JavaScript client under
`cometd-nodejs-client`) and reading the JSON lines they print."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NODE_DIR",
    "NodeRun",
    "Record",
    "events",
    "install_node_packages",
    "meta",
    "node_script",
    "replay_ids",
]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
_NPM_CI_TIMEOUT = 300.0

Record = dict[str, Any]


def is_subscribe_reply(record: Record) -> bool:
    return bool(record["type"] == "meta" and record["kind"] == "subscribe")


def _installed_version(package: str) -> str | None:
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    if not manifest.is_file():
        return None
    version = json.loads(manifest.read_text()).get("version")
    return version if isinstance(version, str) else None


def _packages_match_lockfile() -> bool:
    """Every pinned dependency of package.json is installed at its pinned version."""
    pinned: dict[str, str] = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    return all(_installed_version(name) == version for name, version in pinned.items())


def install_node_packages() -> Path:
    """`npm ci` from the committed lockfile when `tests/node/node_modules` is missing (or does
    not hold the pinned versions); never `npm install`. Returns the scripts' directory."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"`{tool}` is not on PATH: the CometD JavaScript tests need Node 20+"
            )
    if not (NODE_DIR / "node_modules").is_dir() or not _packages_match_lockfile():
        npm = shutil.which("npm")
        assert npm is not None
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=_NPM_CI_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"npm ci failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
        if not _packages_match_lockfile():
            raise RuntimeError(f"npm ci did not install the pinned packages in {NODE_DIR}")
    return NODE_DIR


@dataclass
class NodeRun:
    """One running Node script: the JSON records it printed so far, in order."""

    process: asyncio.subprocess.Process
    records: list[Record] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    returncode: int | None = None

    async def _read_record(self) -> Record | None:
        """The next record, or None at the end of the output."""
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text.startswith("{"):
                record: Record = json.loads(text)
                self.records.append(record)
                return record
            self.other_lines.append(text)

    async def wait_for(self, predicate: Callable[[Record], bool], timeout: float) -> Record:
        """Read records until one matches; fails at the end of the output or after `timeout`."""
        for record in self.records:
            if predicate(record):
                return record
        try:
            async with asyncio.timeout(timeout):
                while (next_record := await self._read_record()) is not None:
                    if predicate(next_record):
                        return next_record
        except TimeoutError:
            raise AssertionError(f"no such record within {timeout} s\n{self.describe()}") from None
        raise AssertionError(f"the script ended without the record\n{self.describe()}")

    async def finish(self, timeout: float) -> list[Record]:
        """Read to the end of the output and wait for the script to exit by itself."""
        try:
            async with asyncio.timeout(timeout):
                while await self._read_record() is not None:
                    pass
                self.returncode = await self.process.wait()
        except TimeoutError:
            raise AssertionError(f"still running after {timeout} s\n{self.describe()}") from None
        return self.records

    def describe(self) -> str:
        return "\n".join(
            [
                "records (last 20):",
                *(json.dumps(record) for record in self.records[-20:]),
                "other stdout:",
                *self.other_lines[-20:],
                "stderr:",
                *self.stderr[-40:],
            ]
        )


async def collect_lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def node_script(
    script: str, arguments: Sequence[str], token: str, node_dir: Path
) -> AsyncIterator[NodeRun]:
    """Start `node <script> <arguments>` with `BAYEUX_TOKEN` in its environment; on exit, a
    script still running is killed (only this process) and reaped."""
    node = shutil.which("node")
    assert node is not None
    process = await asyncio.create_subprocess_exec(
        node,
        script,
        *arguments,
        cwd=node_dir,
        env={**os.environ, "BAYEUX_TOKEN": token},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    run = NodeRun(process)
    assert process.stderr is not None
    stderr_reader = asyncio.create_task(collect_lines(process.stderr, run.stderr))
    try:
        yield run
    finally:
        if process.returncode is None:
            process.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                assert process.stdout is not None
                await process.stdout.read()
                await process.wait()
                await stderr_reader
        stderr_reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr_reader


def events(records: Sequence[Record]) -> list[Record]:
    """The delivered event messages (`{"channel", "data"}`), in order."""
    return [record["message"] for record in records if record["type"] == "event"]


def replay_ids(records: Sequence[Record]) -> list[int]:
    return [int(message["data"]["event"]["replayId"]) for message in events(records)]


def meta(records: Sequence[Record], kind: str) -> list[Record]:
    """The meta replies of one kind (`handshake`, `subscribe`, `connect`, `disconnect`)."""
    return [r["message"] for r in records if r["type"] == "meta" and r["kind"] == kind]
