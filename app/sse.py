"""Server-Sent Events codec: pure, byte-exact (WHATWG HTML, "Server-sent events")."""

from __future__ import annotations

__all__ = ["comment_frame", "event_frame", "retry_frame"]


def _field(name: bytes, value: bytes) -> bytes:
    return name + b": " + value + b"\n" if value else name + b":\n"


def event_frame(data: bytes, *, event_id: str | None = None, event: str | None = None) -> bytes:
    """One event: optional `event:` and `id:` lines, one `data:` line per data line, blank line.

    Line breaks in `data` (LF, CR or CRLF) become separate `data:` lines, which a client joins
    back with LF. `event` and `event_id` must not contain line breaks; `event_id` no NUL either.
    """
    for label, value in (("event", event), ("id", event_id)):
        if value is not None and ("\n" in value or "\r" in value or "\0" in value):
            raise ValueError(f"SSE {label} must not contain CR, LF or NUL: {value!r}")
    out = []
    if event is not None:
        out.append(_field(b"event", event.encode()))
    if event_id is not None:
        out.append(_field(b"id", event_id.encode()))
    if data and b"\n" not in data and b"\r" not in data:
        # One line (compact JSON always is): joined once, never copied line by line, which for
        # a payload of a MiB costs milliseconds.
        out += (b"data: ", data, b"\n\n")
        return b"".join(out)
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    out.extend(_field(b"data", line) for line in lines)
    out.append(b"\n")
    return b"".join(out)


def comment_frame(text: str = "") -> bytes:
    """A comment line, ignored by clients: keeps proxies and idle timers from closing the stream."""
    if "\n" in text or "\r" in text:
        raise ValueError("SSE comments must be one line")
    return b":" + (b" " + text.encode() if text else b"") + b"\n\n"


def retry_frame(milliseconds: int) -> bytes:
    """Tell the client how long to wait before reconnecting."""
    if milliseconds < 0:
        raise ValueError("retry must not be negative")
    return b"retry: " + str(milliseconds).encode() + b"\n\n"
