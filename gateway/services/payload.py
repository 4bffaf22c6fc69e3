"""Validation of a submit body against the model's own parameter schema, before money is spent.

The schema is the ``parameters`` list of the upstream's model detail (``GET /models/{id}``), so a
new sibling model needs no code here. The rules are as lenient as the upstream is (spec §10.2,
§13): ``duration`` may be ``"5"`` or ``5``, numbers may arrive as numeric strings, unknown keys
pass through untouched. Every error names the field.
"""

from __future__ import annotations

import codecs
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway.errors import InvalidJSON, InvalidPayload

__all__ = (
    "DEFAULT_VIDEO_SECONDS",
    "ParameterSpec",
    "Submission",
    "object_fields",
    "parse_submission",
    "validate_payload",
    "video_seconds",
)

MAX_MODEL_ID_LENGTH = 200
_UTF8_CHUNK = 64 * 1024
DEFAULT_VIDEO_SECONDS = 5
MAX_VIDEO_SECONDS = 86_400  # a day of video in one job: far beyond any model
_DURATION_NAMES = frozenset({"duration", "durationSeconds", "duration_seconds"})
_MAX_CHARS_IN_DESCRIPTION = re.compile(r"\bmax(?:imum)?\.?\s+(\d+)\s+char", re.IGNORECASE)
_STRING_TYPES = frozenset({"string", "str", "text"})
_INTEGER_TYPES = frozenset({"integer", "int"})
_NUMBER_TYPES = frozenset({"float", "number", "double"})
_BOOLEAN_TYPES = frozenset({"boolean", "bool"})
_SHOWN_CHARS = 64
# Not after an escaped backslash ("\\\\ud800" is text): an even run of backslashes before it.
_LONE_HIGH_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
)


class ParameterSpec(msgspec.Struct, frozen=True):
    """One entry of a model detail's ``parameters`` list (the keys the spec §7 confirms)."""

    name: str
    type: str = "string"
    required: bool = False
    description: str = ""
    options: list[Any] | None = None
    min_value: float | None = None
    max_value: float | None = None
    max_length: int | None = None
    default_value: Any = None

    def max_chars(self) -> int | None:
        """The length limit: an explicit ``max_length``, else "Max N characters" in the text.

        GMI's docs state string limits only in the description (e.g. prompt "Max 2500
        characters"), so that sentence is the only machine-readable source the upstream offers.
        """
        if self.max_length is not None:
            return self.max_length
        found = _MAX_CHARS_IN_DESCRIPTION.search(self.description)
        return int(found.group(1)) if found else None


@dataclass(frozen=True, slots=True)
class Submission:
    """The checked envelope of ``POST /requests``: the model, and the payload object as sent
    (``object_fields`` reads the fields a check needs)."""

    model: str
    payload: msgspec.Raw


def object_fields(body: bytes | msgspec.Raw, names: tuple[str, ...]) -> dict[str, Any]:
    """The fields ``names`` that the JSON object ``body`` has, or the 400 that says why it is
    not one. Scalars are decoded; an array or object comes back empty (its type is all a
    check needs). Nothing else is decoded: a 16 MiB body of tiny arrays decoded whole took
    ~400 MB, before any limit could refuse it.

    Raises:
        InvalidJSON: not JSON (or nested too deeply to read).
        InvalidPayload: JSON, but not an object.
    """
    if isinstance(body, bytes):
        _check_utf8(body)
    names = tuple(dict.fromkeys(names))  # a catalog may name a parameter twice
    try:
        picker = _picker(names)
    except ValueError:  # a name with a quote, a backslash or a control character: read it all
        whole = _decode(body, dict[str, Any])
        return {name: _as_checked(whole[name]) for name in names if name in whole}
    picked = _decode(body, picker)
    found: dict[str, Any] = {}
    for index, name in enumerate(names):
        raw: msgspec.Raw = getattr(picked, f"f{index}")
        if raw:
            found[name] = _scalar(raw)
    return found


def _decode(body: bytes | msgspec.Raw, kind: Any) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError:  # of an object's fields, only the object is ever checked
        raise InvalidPayload("invalid payload: request body must be a JSON object") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        reason = str(exc)
        if "truncated" in reason and _LONE_HIGH_SURROGATE.search(bytes(body)):  # msgspec's words
            reason = "a \\ud800-\\udbff escape without the low half of its surrogate pair"
        raise InvalidJSON(f"request body is not valid JSON: {reason}") from None
    except RecursionError:
        raise InvalidJSON("request body is not valid JSON: nested too deeply") from None


@functools.lru_cache(maxsize=1024)
def _picker(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """A struct that keeps ``names`` as raw JSON and skips every other field unread."""
    fields = [
        (f"f{i}", msgspec.Raw, msgspec.field(default_factory=msgspec.Raw))
        for i in range(len(names))
    ]
    rename = {f"f{i}": name for i, name in enumerate(names)}
    return msgspec.defstruct("Picked", fields, rename=rename)


def _scalar(raw: msgspec.Raw) -> Any:
    first = _first_byte(raw)
    if first in (b"[", b"{"):  # an array or an object: said as its type, never built
        return [] if first == b"[" else {}
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:  # a number out of range
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None


def _as_checked(value: Any) -> Any:
    """A fully decoded value as ``_scalar`` gives it."""
    if isinstance(value, list | dict):
        return type(value)()
    return value


def parse_submission(body: bytes) -> Submission:
    """Check the envelope ``{"model": str, "payload": object}`` of a submit body.

    Raises:
        InvalidJSON: the body is not JSON.
        InvalidPayload: the envelope is not the upstream's shape.
    """
    if not body.strip():
        raise InvalidPayload("invalid payload: request body is empty; expected {model, payload}")
    _check_utf8(body)
    envelope = _decode(body, _Envelope)
    model = _scalar(envelope.model) if envelope.model else None
    if not isinstance(model, str) or not model:
        raise InvalidPayload("invalid payload: model is required and must be a non-empty string")
    if len(model) > MAX_MODEL_ID_LENGTH:
        raise InvalidPayload(f"invalid payload: model must be at most {MAX_MODEL_ID_LENGTH} chars")
    if _first_byte(envelope.payload) != b"{":
        raise InvalidPayload("invalid payload: payload is required and must be a JSON object")
    return Submission(model=model, payload=envelope.payload)


def _check_utf8(body: bytes) -> None:
    """Fields left unread are not checked by the decoder: the whole body must still be UTF-8.
    In chunks, so a big body is not copied whole into a string to be checked."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for start in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None


def _first_byte(raw: msgspec.Raw) -> bytes:
    return bytes(memoryview(raw)[:1])  # a Raw never starts with whitespace


class _Envelope(msgspec.Struct):
    model: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    payload: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


def validate_payload(payload: dict[str, Any], parameters: tuple[ParameterSpec, ...]) -> None:
    """Check ``payload`` against the model's parameter specs; unknown keys are allowed.

    Raises:
        InvalidPayload: naming the first field that breaks its spec.
    """
    for spec in parameters:
        value = payload.get(spec.name)
        if value is None or value == "":  # "" is as good as absent, as the upstream takes it
            if spec.required:
                raise InvalidPayload(f"invalid payload: {spec.name} is required")
            continue
        problem = _check(spec, value)
        if problem:
            raise InvalidPayload(f"invalid payload: {spec.name} {problem}")


def video_seconds(payload: dict[str, Any], parameters: tuple[ParameterSpec, ...]) -> int:
    """Seconds of video a validated submit asks for, which is what its budget is charged.

    Only the duration parameter the model declares counts (Kling ``duration``, Veo
    ``durationSeconds``), then that parameter's default, then 5: the upstream ignores keys a
    model does not declare, so a stray ``duration`` must not set the price either.

    Raises:
        InvalidPayload: a duration beyond any model's (one the catalog leaves unchecked), which
            the budget counters could not even hold.
    """
    for spec in parameters:
        if spec.name in _DURATION_NAMES:
            for value in (payload.get(spec.name), spec.default_value):
                seconds = _as_number(value)
                if seconds is not None and seconds > MAX_VIDEO_SECONDS:
                    raise InvalidPayload(
                        f"invalid payload: {spec.name} must be at most {MAX_VIDEO_SECONDS} "
                        f"seconds, got {_fmt(seconds)}"
                    )
                if seconds is not None and seconds > 0:
                    return math.ceil(seconds)
    return DEFAULT_VIDEO_SECONDS


def _check(spec: ParameterSpec, value: Any) -> str | None:
    kind = spec.type.lower()
    if spec.options:
        return _check_enum(spec.options, value)
    if kind == "enum":  # no options listed: nothing to check against, the upstream decides
        return None
    if kind in _STRING_TYPES:
        if not isinstance(value, str):
            return f"must be a string, got {_json_type(value)}"
        limit = spec.max_chars()
        if limit is not None and len(value) > limit:
            return f"must be at most {limit} characters, got {len(value)}"
        return None
    if kind in _INTEGER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {_json_type(value)}"
        return _check_range(spec, value)
    if kind in _NUMBER_TYPES:
        number = _as_number(value)
        if number is None:
            got = _json_type(value)
            return f"must be a number, got {'one out of range' if got == 'number' else got}"
        return _check_range(spec, number)
    if kind in _BOOLEAN_TYPES and not isinstance(value, bool):
        return f"must be true or false, got {_json_type(value)}"
    return None


def _check_enum(options: list[Any], value: Any) -> str | None:
    if value in options and type(value) in {type(o) for o in options if o == value}:
        return None
    # The upstream accepts ints for string-enum durations (spec U11): 5 for "5".
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in options:
        return None
    allowed = ", ".join(msgspec.json.encode(o).decode() for o in options)
    return f"must be one of [{allowed}], got {_shown(value)}"


def _shown(value: Any) -> str:
    """A value in an error, short: an array or object by its type (``_scalar`` never built
    it), a long string cut."""
    if isinstance(value, list | dict):
        return f"an {_json_type(value)}"
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        return msgspec.json.encode(value[:_SHOWN_CHARS]).decode()[:-1] + '..."'
    return msgspec.json.encode(value).decode()


def _as_number(value: Any) -> float | None:
    """A finite float, or None; numeric strings count (spec U12), booleans do not."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _check_range(spec: ParameterSpec, number: float) -> str | None:
    if spec.min_value is not None and number < spec.min_value:
        return f"must be >= {_fmt(spec.min_value)}, got {_fmt(number)}"
    if spec.max_value is not None and number > spec.max_value:
        return f"must be <= {_fmt(spec.max_value)}, got {_fmt(number)}"
    return None


def _fmt(number: float) -> str:
    """``5``, ``0.5``, ``1e+308`` (not its 309 digits)."""
    if isinstance(number, int) or (number.is_integer() and abs(number) < 1e15):
        return str(int(number))
    return repr(number)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
