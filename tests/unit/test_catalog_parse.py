"""Reading a model detail's parameter specs (the parts no simulator catalog can send)."""

from __future__ import annotations

import msgspec
import pytest

from gateway.errors import UpstreamRelayedError
from gateway.services.catalog import _parse_model
from gateway.services.payload import ParameterSpec


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
