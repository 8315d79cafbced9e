"""The documents name what the code has: every error code in the README's error table, every
limit among the settings in docs/security.md."""

from __future__ import annotations

import re
from pathlib import Path

from api.errors import HTTP_ERRORS
from api.openapi import UNDOCUMENTED_ERRORS
from app.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
SECURITY = ROOT / "docs" / "security.md"

#: Settings that bound nothing a caller can make the node do or hold: where it listens, what it
#: logs, its keys and start-up data, the backing stores' addresses, and the pace of what the
#: node itself does. Every other setting is a limit that docs/security.md must name.
NOT_LIMITS = frozenset(
    {
        "host",
        "port",
        "workers",
        "log_level",
        "log_format",
        "access_log",
        "metrics_channel_labels",
        "public_url",
        "redis_url",
        "database_url",
        "redis_cluster",
        "redis_min_replicas",
        "redis_fsync",
        "sse_heartbeat",
        "sse_retry",
        "reconnect_jitter",
        "ready_timeout",
        "signing_key",
        "signing_key_file",
        "verification_keys",
        "bayeux_gap",
        "bootstrap_tenant",
        "bootstrap_client_id",
        "bootstrap_client_secret",
        "bootstrap_client_jwt_key",
        "bootstrap_username",
        "bootstrap_password",
        "shutdown_grace",
    }
)


def _error_table(text: str) -> str:
    """The rows of the README's table of native errors."""
    section = text.partition("\n### Errors\n")[2].partition("\n### ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows, "README lost its error table"
    return "\n".join(rows)


def test_the_readme_error_table_lists_every_code_a_route_answers() -> None:
    table = _error_table(README.read_text(encoding="utf-8"))
    listed = set(re.findall(r"`([a-z_]+)`", table))

    missing = sorted(
        code
        for cls, (_, code) in HTTP_ERRORS.items()
        if cls not in UNDOCUMENTED_ERRORS and code not in listed
    )

    assert missing == []


def test_the_readme_error_table_lists_each_code_under_its_status() -> None:
    table = _error_table(README.read_text(encoding="utf-8"))
    status_of = {code: status for status, code in HTTP_ERRORS.values()}
    misplaced = []
    for row in table.splitlines():
        status, codes = row.split("|")[1:3]
        if status.strip().isdigit():
            misplaced += [
                (code, status.strip())
                for code in re.findall(r"`([a-z_]+)`", codes)
                if code in status_of and str(status_of[code]) != status.strip()
            ]

    assert misplaced == []


def test_security_doc_names_every_limit_among_the_settings() -> None:
    text = SECURITY.read_text(encoding="utf-8")
    fields = Settings.__dataclass_fields__

    assert set(fields) >= NOT_LIMITS
    missing = [
        ENV_PREFIX + name.upper()
        for name in fields
        if name not in NOT_LIMITS and not re.search(rf"\b{ENV_PREFIX}{name.upper()}\b", text)
    ]

    assert missing == []
