"""Settings from `REPLAYBUS_*`: parsers, ranges, cross-field rules, secrets kept out of sight."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings, SettingsError, describe_settings

README = Path(__file__).parents[2] / "README.md"
SECRET = "s3cr3t-Value-that-must-not-leak"
KEY_TEXT = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.log_level == "info"
    assert settings.access_log is True
    assert settings.public_url is None
    assert settings.retention_max_age == 72 * 3600.0
    assert settings.retention_max_count == 100_000
    assert settings.max_event_size == 1024 * 1024
    assert settings.max_request_size == 8 * 1024 * 1024
    assert settings.max_batch_events == 1000
    assert settings.idempotency_ttl == 86400.0
    assert settings.sse_heartbeat == 15.0
    assert settings.sse_retry == 2.0
    assert settings.token_ttl == 3600.0
    assert settings.signing_key is None
    assert settings.signing_key_file is None
    assert settings.bootstrap_tenant == "default"
    assert settings.bootstrap_client_id is None
    assert settings.bootstrap_client_secret is None
    assert settings.shutdown_grace == 10.0


def test_unrelated_and_empty_variables_are_ignored() -> None:
    settings = Settings.from_env({"PORT": "1", "REPLAYBUS_PORT": "", "REPLAYBUS_NOPE": "x"})

    assert settings.port == 8080


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("15s", 15.0),
        ("500ms", 0.5),
        ("10m", 600.0),
        ("72h", 259_200.0),
        ("7d", 604_800.0),
        ("30", 30.0),
        ("1.5s", 1.5),
        (" 2 h ", 7200.0),
        ("0", 0.0),
    ],
)
def test_durations_are_seconds(raw: str, seconds: float) -> None:
    settings = Settings.from_env({"REPLAYBUS_SSE_RETRY": raw})

    assert settings.sse_retry == seconds


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("1MiB", 1_048_576),
        ("32KiB", 32_768),
        ("1048576", 1_048_576),
        ("1MB", 1_000_000),
        ("64KB", 64_000),
        ("100B", 100),
        ("2mib", 2_097_152),
        ("1 MiB", 1_048_576),
    ],
)
def test_sizes_are_bytes(raw: str, size: int) -> None:
    settings = Settings.from_env(
        {"REPLAYBUS_MAX_EVENT_SIZE": raw, "REPLAYBUS_HISTORY_MAX_BYTES": "4MiB"}
    )

    assert settings.max_event_size == size


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        (" off ", False),
    ],
)
def test_booleans(raw: str, value: bool) -> None:
    assert Settings.from_env({"REPLAYBUS_ACCESS_LOG": raw}).access_log is value


REDIS = "redis://127.0.0.1:6379/0"


def test_integers_and_text() -> None:
    settings = Settings.from_env(
        {
            "REPLAYBUS_PORT": "9000",
            "REPLAYBUS_HOST": "0.0.0.0",
            "REPLAYBUS_WORKERS": " 4 ",
            "REPLAYBUS_REDIS_URL": REDIS,
        }
    )

    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9000, 4)


@pytest.mark.parametrize(
    ("env", "raw"),
    [
        ("REPLAYBUS_PORT", "http"),
        ("REPLAYBUS_PORT", "80.5"),
        ("REPLAYBUS_WORKERS", "two"),
        ("REPLAYBUS_SSE_HEARTBEAT", "soon"),
        ("REPLAYBUS_SSE_HEARTBEAT", "15 minutes"),
        ("REPLAYBUS_SSE_HEARTBEAT", "-5s"),
        ("REPLAYBUS_TOKEN_TTL", "1w"),
        ("REPLAYBUS_MAX_EVENT_SIZE", "big"),
        ("REPLAYBUS_MAX_EVENT_SIZE", "1TB"),
        ("REPLAYBUS_MAX_EVENT_SIZE", "1.5MiB"),
        ("REPLAYBUS_ACCESS_LOG", "maybe"),
    ],
)
def test_unparsable_value_names_the_variable(env: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env}: ") as caught:
        Settings.from_env({env: raw})

    assert repr(raw) in str(caught.value)


@pytest.mark.parametrize(
    ("env", "raw"),
    [
        ("REPLAYBUS_PORT", "65536"),
        ("REPLAYBUS_PORT", "-1"),
        ("REPLAYBUS_WORKERS", "0"),
        ("REPLAYBUS_WORKERS", "65"),
        ("REPLAYBUS_RETENTION_MAX_AGE", "500ms"),
        ("REPLAYBUS_RETENTION_MAX_AGE", "366d"),
        ("REPLAYBUS_RETENTION_MAX_COUNT", "0"),
        ("REPLAYBUS_MAX_EVENT_SIZE", "63"),
        ("REPLAYBUS_MAX_BATCH_EVENTS", "100001"),
        ("REPLAYBUS_SSE_HEARTBEAT", "10ms"),
        ("REPLAYBUS_SSE_HEARTBEAT", "2h"),
        ("REPLAYBUS_TOKEN_TTL", "9s"),
        ("REPLAYBUS_TOKEN_TTL", "8d"),
        ("REPLAYBUS_SUBSCRIBER_QUEUE_SIZE", "9"),
    ],
)
def test_out_of_range_value_names_the_variable(env: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"^{env}: must be at (least|most) "):
        Settings.from_env({env: raw})


@pytest.mark.parametrize(
    ("env", "raw", "attribute", "value"),
    [
        ("REPLAYBUS_PORT", "0", "port", 0),
        ("REPLAYBUS_PORT", "65535", "port", 65535),
        ("REPLAYBUS_WORKERS", "64", "workers", 64),
        ("REPLAYBUS_RETENTION_MAX_AGE", "365d", "retention_max_age", 365 * 86400.0),
        ("REPLAYBUS_RETENTION_MAX_AGE", "1s", "retention_max_age", 1.0),
        ("REPLAYBUS_MAX_EVENT_SIZE", "64", "max_event_size", 64),
        ("REPLAYBUS_SSE_HEARTBEAT", "50ms", "sse_heartbeat", 0.05),
        ("REPLAYBUS_TOKEN_TTL", "7d", "token_ttl", 604_800.0),
        ("REPLAYBUS_TOKEN_TTL", "10s", "token_ttl", 10.0),
    ],
)
def test_range_bounds_are_inclusive(env: str, raw: str, attribute: str, value: float) -> None:
    assert getattr(Settings.from_env({env: raw, "REPLAYBUS_REDIS_URL": REDIS}), attribute) == value


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"REPLAYBUS_MAX_REQUEST_SIZE": "1MiB", "REPLAYBUS_MAX_EVENT_SIZE": "2MiB"},
            "REPLAYBUS_MAX_REQUEST_SIZE (1048576) must be at least REPLAYBUS_MAX_EVENT_SIZE "
            "(2097152)",
            id="request-smaller-than-event",
        ),
        pytest.param(
            {"REPLAYBUS_SIGNING_KEY": KEY_TEXT, "REPLAYBUS_SIGNING_KEY_FILE": "/etc/key.pem"},
            "REPLAYBUS_SIGNING_KEY and REPLAYBUS_SIGNING_KEY_FILE are exclusive: set one",
            id="key-and-key-file",
        ),
        pytest.param(
            {"REPLAYBUS_BOOTSTRAP_CLIENT_ID": "ops"},
            "REPLAYBUS_BOOTSTRAP_CLIENT_ID and REPLAYBUS_BOOTSTRAP_CLIENT_SECRET go together: "
            "set both or neither",
            id="client-id-without-secret",
        ),
        pytest.param(
            {"REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": SECRET},
            "REPLAYBUS_BOOTSTRAP_CLIENT_ID and REPLAYBUS_BOOTSTRAP_CLIENT_SECRET go together: "
            "set both or neither",
            id="client-secret-without-id",
        ),
        pytest.param(
            {"REPLAYBUS_PUBLIC_URL": "https://bus.example.com/"},
            "REPLAYBUS_PUBLIC_URL: must be scheme://host[:port] with no path or trailing slash, "
            "got 'https://bus.example.com/'",
            id="public-url-trailing-slash",
        ),
        pytest.param(
            {"REPLAYBUS_PUBLIC_URL": "https://bus.example.com/api"},
            "REPLAYBUS_PUBLIC_URL: must be scheme://host[:port] with no path or trailing slash, "
            "got 'https://bus.example.com/api'",
            id="public-url-with-path",
        ),
        pytest.param(
            {"REPLAYBUS_PUBLIC_URL": "bus.example.com"},
            "REPLAYBUS_PUBLIC_URL: must be scheme://host[:port] with no path or trailing slash, "
            "got 'bus.example.com'",
            id="public-url-without-scheme",
        ),
        pytest.param(
            {"REPLAYBUS_LOG_LEVEL": "verbose"},
            "REPLAYBUS_LOG_LEVEL: must be one of critical, error, warning, info, debug, trace, "
            "got 'verbose'",
            id="unknown-log-level",
        ),
        pytest.param(
            {"REPLAYBUS_BOOTSTRAP_TENANT": "acme corp"},
            "REPLAYBUS_BOOTSTRAP_TENANT: 1-64 letters, digits, '_' or '-', got 'acme corp'",
            id="bad-tenant-name",
        ),
        pytest.param(
            {"REPLAYBUS_BAYEUX_GAP": "ignore"},
            "REPLAYBUS_BAYEUX_GAP: must be one of end-session, report, got 'ignore'",
            id="bad-bayeux-gap",
        ),
        pytest.param(
            {"REPLAYBUS_REDIS_FSYNC": "everysec"},
            "REPLAYBUS_REDIS_FSYNC: must be one of off, always, got 'everysec'",
            id="unknown-fsync-mode",
        ),
        pytest.param(
            {
                "REPLAYBUS_REDIS_MIN_REPLICAS": "1",
                "REPLAYBUS_REDIS_REPLICA_TIMEOUT": "2s",
                "REPLAYBUS_REDIS_COMMAND_TIMEOUT": "2s",
            },
            "REPLAYBUS_REDIS_REPLICA_TIMEOUT (2s) must be below REPLAYBUS_REDIS_COMMAND_TIMEOUT "
            "(2s), or a publish waiting for its replicas would be cut off as a failed call",
            id="replica-wait-as-long-as-a-command",
        ),
    ],
)
def test_cross_field_and_format_rules(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    "url", ["https://bus.example.com", "http://localhost:8080", "https://10.0.0.1:8443"]
)
def test_public_url_without_path_is_accepted(url: str) -> None:
    assert Settings.from_env({"REPLAYBUS_PUBLIC_URL": url}).public_url == url


@pytest.mark.parametrize("value", ["end-session", "report"])
def test_both_bayeux_gap_behaviours_are_accepted(value: str) -> None:
    assert Settings.from_env({"REPLAYBUS_BAYEUX_GAP": value}).bayeux_gap == value


@pytest.mark.parametrize("level", ["critical", "error", "warning", "info", "debug", "trace"])
def test_known_log_levels_are_accepted(level: str) -> None:
    assert Settings.from_env({"REPLAYBUS_LOG_LEVEL": level}).log_level == level


def test_request_size_equal_to_event_size_is_accepted() -> None:
    settings = Settings.from_env(
        {
            "REPLAYBUS_MAX_REQUEST_SIZE": "2MiB",
            "REPLAYBUS_MAX_EVENT_SIZE": "2MiB",
            "REPLAYBUS_HISTORY_MAX_BYTES": "2MiB",
        }
    )

    assert settings.max_request_size == settings.max_event_size == 2_097_152


def test_overrides_win_over_environment() -> None:
    settings = Settings.from_env(
        {"REPLAYBUS_PORT": "9000", "REPLAYBUS_HOST": "0.0.0.0"}, {"port": 9100}
    )

    assert (settings.host, settings.port) == ("0.0.0.0", 9100)


def test_none_overrides_are_ignored() -> None:
    overrides: dict[str, Any] = {"port": None, "host": None, "log_level": None}

    settings = Settings.from_env({"REPLAYBUS_PORT": "9000"}, overrides)

    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 9000, "info")


def test_overrides_are_validated_too() -> None:
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_PORT: must be at most 65535"):
        Settings.from_env({}, {"port": 70000})


def test_replace_validates() -> None:
    assert Settings().replace(port=9001).port == 9001
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_WORKERS: "):
        Settings().replace(workers=0)


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": SECRET}, id="secret-without-id"),
        pytest.param(
            {"REPLAYBUS_SIGNING_KEY": SECRET, "REPLAYBUS_SIGNING_KEY_FILE": "/k.pem"},
            id="key-with-key-file",
        ),
        pytest.param(
            {
                "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "ops",
                "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": SECRET,
                "REPLAYBUS_PORT": "nope",
            },
            id="unrelated-bad-value",
        ),
        pytest.param(
            {
                "REPLAYBUS_SIGNING_KEY": SECRET,
                "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "ops",
                "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": SECRET,
                "REPLAYBUS_LOG_LEVEL": "loud",
            },
            id="late-validation-failure",
        ),
    ],
)
def test_secret_values_never_appear_in_errors(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


def test_secret_values_never_appear_in_repr() -> None:
    settings = Settings.from_env(
        {
            "REPLAYBUS_SIGNING_KEY": KEY_TEXT + SECRET,
            "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "ops-client",
            "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": SECRET,
        }
    )

    shown = repr(settings)
    assert settings.bootstrap_client_secret == SECRET
    assert SECRET not in shown
    assert "BEGIN PRIVATE KEY" not in shown
    assert "ops-client" in shown  # the id is not secret: the repr does show real fields
    assert SECRET not in str(settings)


def test_describe_settings_lists_every_field_with_its_variable() -> None:
    rows = describe_settings()
    names = [env for env, _, _ in rows]

    assert len(names) == len(set(names)) == len(Settings.__dataclass_fields__)
    assert all(re.fullmatch(r"REPLAYBUS_[A-Z0-9_]+", name) for name in names)
    assert ("REPLAYBUS_PORT", "8080", rows[names.index("REPLAYBUS_PORT")][2]) in rows
    assert rows[names.index("REPLAYBUS_ACCESS_LOG")][1] == "true"
    assert rows[names.index("REPLAYBUS_SIGNING_KEY")][1] == "—"
    assert all(doc for _, _, doc in rows)


def test_readme_documents_every_setting() -> None:
    assert README.is_file(), f"{README} is missing: it must document every REPLAYBUS_* setting"
    text = README.read_text(encoding="utf-8")

    missing = [env for env, _, _ in describe_settings() if not re.search(rf"\b{env}\b", text)]

    assert missing == []


def test_subscriber_queue_must_hold_two_full_batches() -> None:
    env = {"REPLAYBUS_MAX_BATCH_EVENTS": "1000", "REPLAYBUS_SUBSCRIBER_QUEUE_SIZE": "1999"}
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_SUBSCRIBER_QUEUE_SIZE \(1999\)"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "REPLAYBUS_SUBSCRIBER_QUEUE_SIZE": "2000"})


def test_subscriber_queue_bytes_must_hold_one_full_request() -> None:
    env = {"REPLAYBUS_MAX_REQUEST_SIZE": "4MiB", "REPLAYBUS_SUBSCRIBER_QUEUE_BYTES": "4194303"}
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_SUBSCRIBER_QUEUE_BYTES \(4194303\)"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "REPLAYBUS_SUBSCRIBER_QUEUE_BYTES": "4MiB"})


def test_history_page_bytes_must_hold_the_largest_event() -> None:
    env = {"REPLAYBUS_MAX_EVENT_SIZE": "2MiB", "REPLAYBUS_HISTORY_MAX_BYTES": "1MiB"}
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_HISTORY_MAX_BYTES \(1048576\)"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "REPLAYBUS_HISTORY_MAX_BYTES": "2MiB"})


def test_shutdown_grace_below_one_second_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_SHUTDOWN_GRACE:"):
        Settings.from_env({"REPLAYBUS_SHUTDOWN_GRACE": "500ms"})


def test_several_workers_need_the_redis_engine() -> None:
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_WORKERS=2 needs a shared engine"):
        Settings.from_env({"REPLAYBUS_WORKERS": "2"})
    assert Settings.from_env({"REPLAYBUS_WORKERS": "2", "REPLAYBUS_REDIS_URL": REDIS}).workers == 2


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "postgres://x"])
def test_redis_url_needs_a_redis_scheme(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_REDIS_URL: "):
        Settings.from_env({"REPLAYBUS_REDIS_URL": url})
