"""What every public request decoder shares: stream-id checks, boolean
query values, decoding a body into its struct with a clear 4xx.  Pure
functions over bytes and strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import msgspec

from ..errors import BadRequest, MessageTooLarge

__all__ = [
    "MAX_INT_CHARS",
    "MAX_STREAM_ID_BYTES",
    "check_stream_id",
    "decode_body",
    "parse_bool",
    "too_deep",
    "validation_error",
]

MAX_STREAM_ID_BYTES = 256
# Longest integer text accepted in a query (beyond, the value is out of range anyway).
MAX_INT_CHARS = 9

T = TypeVar("T")


def check_stream_id(value: str | None, field: str = "streamId") -> str:
    """Validate a stream id: 1..256 UTF-8 bytes, no NUL.

    Raises:
        BadRequest: missing, empty, too long or containing NUL.
    """
    if value is None:
        raise BadRequest(f"{field} is required", field=field)
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_STREAM_ID_BYTES:
        raise BadRequest(
            f"{field} must be 1 to {MAX_STREAM_ID_BYTES} UTF-8 bytes, got {size}", field=field
        )
    if "\x00" in value:
        raise BadRequest(f"{field} must not contain NUL characters", field=field)
    return value


def decode_body(body: bytes, decode: Callable[[bytes], T], limit: int) -> T:
    """A request body decoded into its struct, or the clear 4xx saying why not.

    Raises:
        MessageTooLarge: over ``limit`` bytes.
        BadRequest: not UTF-8, not JSON, nested too deep, or not of the shape.
    """
    if len(body) > limit:
        raise MessageTooLarge(len(body), limit)
    _check_utf8(body)
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        text = "the request body is empty" if not body else f"the request body is not valid JSON: {exc}"
        raise BadRequest(text) from None
    except RecursionError:
        raise too_deep() from None


def _check_utf8(body: bytes) -> None:
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the request body is not valid UTF-8 (byte {exc.start})") from None


def too_deep() -> BadRequest:
    """The answer to JSON nested deeper than the decoder goes (about 900
    levels of arrays or objects)."""
    return BadRequest("the request body nests arrays or objects too deeply (at most about 900 levels)", field="message")


_TRUE = frozenset(("true", "1", "t", "yes"))
_FALSE = frozenset(("false", "0", "f", "no"))


def parse_bool(value: str | None, field: str) -> bool:
    """A boolean query parameter: absent or empty is false; ``true``/``1``/``t``
    and ``false``/``0``/``f`` in any case.

    Raises:
        BadRequest: any other value.
    """
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadRequest(f"{field} must be true or false, got {value!r}", field=field)


def validation_error(exc: msgspec.ValidationError, *, item: bool = False) -> BadRequest:
    """A clear 400 from msgspec's message (``item``: the text is about one
    batch item, not the whole request body)."""
    text = str(exc)
    field = None
    if " - at `$." in text:
        text, _, path = text.rpartition(" - at `$.")
        field = path.rstrip("`")
        text = f"{field}: {text}"
    elif text.startswith("Object missing required field `"):
        field = text.split("`")[1]
        text = f"{field} is required"
    elif text.startswith("Expected `object`"):
        text = f"{'each item' if item else 'the request body'} must be a JSON object ({text})"
    return BadRequest(text.replace("`", ""), field=field)
