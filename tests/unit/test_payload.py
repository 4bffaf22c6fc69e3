"""Submit validation against a model's parameter schema (the spec's Kling table, §10.2)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import msgspec
import pytest

from gateway.errors import InvalidJSON, InvalidPayload
from gateway.services.payload import (
    ParameterSpec,
    object_fields,
    parse_submission,
    validate_payload,
    video_seconds,
)

KLING_PARAMETERS = msgspec.json.decode(
    b"""[
  {"name": "prompt", "type": "string", "required": true,
   "description": "Text prompt describing the desired video. Max 2500 characters."},
  {"name": "negative_prompt", "type": "string", "required": false,
   "description": "Text describing what to avoid. Max 2500 characters."},
  {"name": "duration", "type": "enum", "required": false, "default_value": "5",
   "options": ["5", "10"]},
  {"name": "aspect_ratio", "type": "enum", "required": false, "options": ["16:9", "9:16", "1:1"]},
  {"name": "cfg_scale", "type": "float", "required": false, "min_value": 0, "max_value": 1,
   "step": 0.1}
]""",
    type=tuple[ParameterSpec, ...],
)


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt": "a fox"},
        {"prompt": "a fox", "duration": "10"},
        {"prompt": "a fox", "duration": 5},
        {"prompt": "a fox", "duration": 10},
        {"prompt": "a fox", "aspect_ratio": "9:16"},
        {"prompt": "a fox", "cfg_scale": 0},
        {"prompt": "a fox", "cfg_scale": 1.0},
        {"prompt": "a fox", "cfg_scale": "0.7"},
        {"prompt": "a fox", "negative_prompt": ""},
        {"prompt": "a fox", "duration": "", "aspect_ratio": ""},  # the simulator takes them too
        {"prompt": "x" * 2500, "negative_prompt": "y" * 2500},
        {"prompt": "a fox", "image": "https://example.test/ignored.png"},
        {"prompt": "a fox", "some_future_key": {"nested": True}},
        {"prompt": "a fox", "negative_prompt": None},
    ],
)
def test_valid_payloads_pass(payload: dict[str, Any]) -> None:
    validate_payload(payload, KLING_PARAMETERS)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "prompt is required"),
        ({"prompt": ""}, "prompt is required"),
        ({"prompt": None}, "prompt is required"),
        ({"prompt": 42}, "prompt must be a string, got number"),
        ({"prompt": "x" * 2501}, "prompt must be at most 2500 characters, got 2501"),
        ({"prompt": "a", "negative_prompt": "n" * 2501}, "negative_prompt must be at most 2500"),
        ({"prompt": "a", "negative_prompt": ["n"]}, "negative_prompt must be a string, got array"),
        ({"prompt": "a", "duration": "7"}, 'duration must be one of ["5", "10"], got "7"'),
        ({"prompt": "a", "duration": 7}, 'duration must be one of ["5", "10"], got 7'),
        ({"prompt": "a", "duration": 5.0}, "duration must be one of"),
        ({"prompt": "a", "duration": True}, "duration must be one of"),
        ({"prompt": "a", "aspect_ratio": "4:3"}, "aspect_ratio must be one of"),
        # Said by type and cut short, not as the placeholders "[]" and "{}" or in full.
        ({"prompt": "a", "duration": ["10"]}, 'duration must be one of ["5", "10"], got an array'),
        ({"prompt": "a", "duration": {"s": 10}}, "got an object"),
        ({"prompt": "a", "duration": "7" * 1000}, f'got "{"7" * 64}..."'),
        ({"prompt": "a", "cfg_scale": 1e308}, "cfg_scale must be <= 1, got 1e+308"),
        ({"prompt": "a", "cfg_scale": 1.5}, "cfg_scale must be <= 1, got 1.5"),
        ({"prompt": "a", "cfg_scale": -0.1}, "cfg_scale must be >= 0, got -0.1"),
        ({"prompt": "a", "cfg_scale": "high"}, "cfg_scale must be a number, got string"),
        ({"prompt": "a", "cfg_scale": "nan"}, "cfg_scale must be a number"),
        ({"prompt": "a", "cfg_scale": True}, "cfg_scale must be a number, got boolean"),
        ({"prompt": "a", "cfg_scale": 10**400}, "cfg_scale must be a number, got one out of range"),
    ],
)
def test_invalid_payloads_name_the_field(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(payload, KLING_PARAMETERS)
    assert message in caught.value.message
    assert caught.value.message.startswith("invalid payload: ")


@pytest.mark.parametrize(
    ("spec", "good", "bad"),
    [
        (ParameterSpec(name="n", type="integer", min_value=1, max_value=4), 2, 2.5),
        (ParameterSpec(name="n", type="integer", min_value=1, max_value=4), 4, 10**400),
        (ParameterSpec(name="n", type="boolean"), False, "yes"),
        (ParameterSpec(name="n", type="string", max_length=3), "abc", "abcd"),
    ],
)
def test_other_parameter_types(spec: ParameterSpec, good: Any, bad: Any) -> None:
    validate_payload({"n": good}, (spec,))
    with pytest.raises(InvalidPayload, match="invalid payload: n "):
        validate_payload({"n": bad}, (spec,))


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (b"", InvalidPayload, "request body is empty"),
        (b"{not json", InvalidJSON, "request body is not valid JSON"),
        (b'{"model": "m", "payload": {"prompt": "\xff\xfe"}}', InvalidJSON, "not valid JSON"),
        (b'{"payload": ' + b"[" * 100_000, InvalidJSON, "not valid JSON: nested too deeply"),
        # msgspec calls a lone high surrogate "Input data was truncated" (what a JavaScript
        # client sends after slicing an emoji in half).
        (b'{"model": "m", "payload": {"prompt": "\\ud83e"}}', InvalidJSON, "low half"),
        (b'{"model": "m", "payload": {"prompt": "\\uD83Ex"}}', InvalidJSON, "low half"),
        (b'{"model": "m", "payload": {"prompt": "\\ud83e\\ude00"', InvalidJSON, "truncated"),
        (b'{"model": "m", "payload": {"prompt": "\\\\ud83e"', InvalidJSON, "truncated"),  # text
        (b"[" * 100_000, InvalidPayload, "must be a JSON object"),
        (b"[1, 2]", InvalidPayload, "must be a JSON object"),
        (b'{"payload": {}}', InvalidPayload, "model is required"),
        (b'{"model": 5, "payload": {}}', InvalidPayload, "model is required"),
        (b'{"model": "", "payload": {}}', InvalidPayload, "model is required"),
        (b'{"model": "m"}', InvalidPayload, "payload is required"),
        (b'{"model": "m", "payload": "p"}', InvalidPayload, "payload is required"),
        (b'{"model": "' + b"m" * 201 + b'", "payload": {}}', InvalidPayload, "at most 200"),
    ],
)
def test_envelope_errors(body: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_submission(body)


def test_envelope_accepts_the_upstream_shape() -> None:
    submission = parse_submission(b'{"model": "Kling-Text2Video-V2-Master", "payload": {"a": 1}}')
    assert submission.model == "Kling-Text2Video-V2-Master"
    assert bytes(submission.payload) == b'{"a": 1}'


def test_only_the_fields_a_check_needs_are_decoded() -> None:
    """A 16 MiB payload of tiny arrays decoded whole took ~400 MB before any limit applied."""
    junk = b'{"junk": [' + b"[]," * 500_000 + b'[]], "prompt": "a fox", "duration": [1]}'
    tracemalloc.start()
    try:
        fields = object_fields(junk, ("prompt", "duration", "absent"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fields == {"prompt": "a fox", "duration": []}  # an array is said as its type
    assert object_fields(b'{"a": 1}', ("a", "a")) == {"a": 1}  # a name given twice
    # Names the raw reader cannot take are read from the whole object, with the same result.
    odd = b'{"st\\"yle": [1], "aspect\\n": "16:9", "prompt": "x"}'
    assert object_fields(odd, ('st"yle', "aspect\n", "prompt")) == {
        'st"yle': [],
        "aspect\n": "16:9",
        "prompt": "x",
    }
    with pytest.raises(InvalidJSON, match="out of range"):
        object_fields(b'{"cfg_scale": 1e999}', ("cfg_scale",))
    assert peak < 2 * len(junk)  # the UTF-8 check's copy; whole, some 30 times the body


VEO_PARAMETERS = (
    ParameterSpec(name="prompt", required=True),
    ParameterSpec(name="durationSeconds", type="enum", options=["8", "6", "4"], default_value="8"),
)


@pytest.mark.parametrize(
    ("payload", "parameters", "seconds"),
    [
        ({}, KLING_PARAMETERS, 5),
        ({"duration": "10"}, KLING_PARAMETERS, 10),
        ({"duration": 10}, KLING_PARAMETERS, 10),
        ({"durationSeconds": "4"}, VEO_PARAMETERS, 4),
        ({}, VEO_PARAMETERS, 8),  # the model's own default, not 5
        # keys the model does not declare set no price: the upstream ignores them too
        ({"durationSeconds": "8", "duration": 0.01}, VEO_PARAMETERS, 8),
        ({"duration": "10", "durationSeconds": "1"}, KLING_PARAMETERS, 10),
        ({"duration": "1"}, (ParameterSpec(name="prompt"),), 5),
        ({"duration": True}, KLING_PARAMETERS, 5),
        ({"durationSeconds": ""}, VEO_PARAMETERS, 8),
    ],
)
def test_cost_is_the_duration_the_model_declares(
    payload: dict[str, Any], parameters: tuple[ParameterSpec, ...], seconds: int
) -> None:
    assert video_seconds(payload, parameters) == seconds


def test_a_duration_no_model_makes_is_refused_not_charged() -> None:
    """Left unchecked by the catalog, 1e14 s overflowed the budget counter: a 503 blaming the
    store (review finding)."""
    unchecked = (ParameterSpec(name="duration", type="unchecked"),)
    assert video_seconds({"duration": 86400}, unchecked) == 86400
    with pytest.raises(InvalidPayload) as refused:
        video_seconds({"duration": 1e14}, unchecked)
    assert str(refused.value).endswith("at most 86400 seconds, got 100000000000000")
