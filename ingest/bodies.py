"""Reading a callback body: bounded in size, kept as text exactly as it came."""

from __future__ import annotations

from starlette.requests import Request

# Of a body over the limit, this much is kept for review (with its size): enough to see what it
# was and who sent it, never the megabytes a stranger could make us store.
PREFIX_KEPT_BYTES = 4096


class BodyTooLarge(Exception):
    def __init__(self, prefix: bytes, size: str) -> None:
        super().__init__("body_too_large")
        self.prefix = prefix  # the body's first PREFIX_KEPT_BYTES, kept for inspection
        # The body's size in bytes as its Content-Length declared it, or, for a body sent without
        # one (chunked), ">N": more than the limit N, where reading stopped.
        self.size = size


def declared_length(value: str | None) -> int | None:
    """The Content-Length header as a number of bytes, or None when absent or not a number."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 20:
        return None
    return int(value.strip())


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, or ``BodyTooLarge`` as soon as it is known to pass ``max_bytes``: at once when its
    Content-Length says so (after reading only the prefix that is kept), else when the bytes read
    pass the limit. Never reads further. ``starlette.requests.ClientDisconnect`` when the client
    hangs up before the end."""
    declared = declared_length(request.headers.get("content-length"))
    chunks: list[bytes] = []
    size = 0
    if declared is not None and declared > max_bytes:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size >= PREFIX_KEPT_BYTES:
                break
        raise BodyTooLarge(b"".join(chunks)[:PREFIX_KEPT_BYTES], str(declared))
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(b"".join(chunks)[:PREFIX_KEPT_BYTES], f">{max_bytes}" if declared is None else str(declared))
    return b"".join(chunks)


def is_json_content_type(value: str | None) -> bool:
    return (value or "").split(";", 1)[0].strip().lower() == "application/json"


def body_text(raw: bytes) -> str:
    """The raw body as text for the inbox, exactly when it is UTF-8, visibly escaped when not."""
    return raw.decode("utf-8", errors="backslashreplace")
