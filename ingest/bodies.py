"""Reading a callback body: bounded in size, kept as text exactly as it came."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    def __init__(self, prefix: bytes) -> None:
        super().__init__("body_too_large")
        self.prefix = prefix  # what was read before the limit, kept for inspection


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The body, or ``BodyTooLarge`` as soon as it passes ``max_bytes``; never reads further."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(b"".join(chunks)[:max_bytes])
        chunks.append(chunk)
    return b"".join(chunks)


def is_json_content_type(value: str | None) -> bool:
    return (value or "").split(";", 1)[0].strip().lower() == "application/json"


def body_text(raw: bytes) -> str:
    """The raw body as text for the inbox, exactly when it is UTF-8, visibly escaped when not."""
    return raw.decode("utf-8", errors="backslashreplace")
