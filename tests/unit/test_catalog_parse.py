"""Reading a model detail's parameter specs (the parts no simulator catalog can send)."""

from __future__ import annotations

import msgspec
import pytest

from gateway.errors import UpstreamRelayedError
from gateway.services.catalog import _parse_model
from gateway.services.payload import ParameterSpec, validate_payload, video_seconds


def test_specs_without_a_name_are_skipped_and_the_rest_kept() -> None:
    raw = msgspec.json.encode(
        {"parameters": [{"type": "string"}, "prompt", {"name": "prompt", "required": 1}]}
    )
    assert _parse_model("m", raw).parameters == (ParameterSpec(name="prompt", required=True),)


@pytest.mark.parametrize("raw", [b"[]", b'{"parameters": {"prompt": {}}}', b"not json"])
def test_a_detail_that_is_not_an_object_with_a_list_is_a_502(raw: bytes) -> None:
    with pytest.raises(UpstreamRelayedError) as refused:
        _parse_model("m", raw)
    assert refused.value.status == 502
    assert "malformed model detail" in refused.value.message


def test_an_unreadable_field_is_dropped_and_the_rest_kept() -> None:
    """Falling back to the name alone lost the default duration, so a submit without one was
    charged 5 s for an 8 s video (review finding)."""
    veo = {"name": "durationSeconds", "type": "enum", "options": ["4", "8"],
           "default_value": "8", "description": None}  # fmt: skip
    (spec,) = _parse_model("m", msgspec.json.encode({"parameters": [veo]})).parameters
    assert spec == ParameterSpec(
        name="durationSeconds", type="enum", options=["4", "8"], default_value="8"
    )
    assert video_seconds({}, (spec,)) == 8


@pytest.mark.parametrize(
    "odd", [{"options": {"a": 1}}, {"max_value": "nan"}, {"type": 3}, {"max_length": "n/a"}]
)
def test_a_parameter_whose_checks_cannot_be_read_goes_unchecked(odd: dict[str, object]) -> None:
    entry = {"name": "p", "type": "enum", "options": ["a"], "required": "true", **odd}
    (spec,) = _parse_model("m", msgspec.json.encode({"parameters": [entry]})).parameters
    assert (spec.type, spec.options, spec.required) == ("unchecked", None, True)
    validate_payload({"p": "anything"}, (spec,))  # left to the upstream
