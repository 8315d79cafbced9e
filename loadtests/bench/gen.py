"""The compiled load generator (loadtests/gen, Go standard library only): built once per change
of its sources into bench-results/.bin, run pinned to the generator core, one JSON result per
run. Why compiled: a Python generator on one core tops out near 11 700 publishes/s, below what
the peers take, so their figures would have been the generator's.

Every result carries `generator_cpu`, the generator's own CPU time during the measured phase as
a fraction of one core: above `GENERATOR_BOUND` the row measures the generator, not the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loadtests.bench.peers._process import taskset_prefix

__all__ = ["GENERATOR_BOUND", "GENERATOR_CPU", "binary", "holding", "run"]

GENERATOR_CPU = 1
GENERATOR_BOUND = 0.8
_SOURCES = Path(__file__).parents[1] / "gen"
_CACHE = Path(__file__).parents[2] / "bench-results" / ".bin"
_BUILD_TIMEOUT_S = 300.0
_HOLD_TIMEOUT_S = 180.0


def _go() -> str:
    found = shutil.which("go") or ("/usr/bin/go" if os.access("/usr/bin/go", os.X_OK) else None)
    if found is None:
        raise RuntimeError("the load generator needs Go (Debian: apt-get install golang-go)")
    return found


def binary() -> Path:
    """The generator built from the current sources (built now if they changed)."""
    digest = hashlib.sha256()
    sources = [path for path in sorted(_SOURCES.glob("*.go")) if not path.stem.endswith("_test")]
    for source in [*sources, _SOURCES / "go.mod"]:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    built = _CACHE / f"gen-{digest.hexdigest()[:16]}"
    if built.exists():
        return built
    _CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_CACHE) as folder:
        output = Path(folder) / "gen"
        # Standard library only: no module download is ever needed, so none is attempted.
        environment = {
            **os.environ,
            "GOPROXY": "off",
            "GOFLAGS": "-mod=mod",
            "CGO_ENABLED": "0",
            "GOCACHE": str(_CACHE / "go-build"),
        }
        done = subprocess.run(
            [_go(), "build", "-trimpath", "-o", str(output), "."],
            cwd=_SOURCES,
            env=environment,
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"building the load generator failed:\n{done.stderr}")
        output.replace(built)
    for stale in _CACHE.glob("gen-*"):  # builds of sources that have changed since
        if stale != built:
            stale.unlink(missing_ok=True)
    return built


def _command(mode: str) -> list[str]:
    return [*taskset_prefix(GENERATOR_CPU), str(binary()), mode]


def run(mode: str, spec: Mapping[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
    """Run one measurement (`publish`, `fanout-sse`, `fanout-bayeux`, `replay`) to its result."""
    done = subprocess.run(
        _command(mode), input=json.dumps(spec), capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator ({mode}) failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@contextmanager
def holding(spec: Mapping[str, Any]) -> Iterator[None]:
    """`idle`: the connections `spec` describes, open for the duration of the block."""
    process = subprocess.Popen(
        _command("idle"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    opened = ""
    try:
        process.stdin.write(json.dumps(spec) + "\n")
        process.stdin.flush()
        opened = process.stdout.readline()  # {"open": count} once all are open
        if opened:
            yield
    finally:
        try:
            _, errors = process.communicate(timeout=_HOLD_TIMEOUT_S)  # closes its stdin
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate()
        if process.returncode != 0 or not opened:
            raise RuntimeError(f"load generator (idle) failed: {errors.strip()}")
