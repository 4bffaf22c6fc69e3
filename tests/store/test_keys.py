"""The key function: one tenant's keys share one Redis Cluster slot, and nobody else's do."""

from __future__ import annotations

import pytest

from gateway.store.keys import store_key


@pytest.mark.parametrize(
    ("tenant", "parts", "expected"),
    [
        ("studio-web", ("job", "r1"), "gmigw:{studio-web}:job:r1"),
        ("studio-web", ("jobs", "model", "Veo3"), "gmigw:{studio-web}:jobs:model:Veo3"),
        ("a", ("job", ""), "gmigw:{a}:job:"),
        (None, ("catalog", "generation"), "gmigw:catalog:generation"),
    ],
)
def test_keys(tenant: str | None, parts: tuple[str, ...], expected: str) -> None:
    assert store_key("gmigw", tenant, *parts) == expected


@pytest.mark.parametrize("tenant", ["", "a}b", "{a}", "a{"])
def test_a_tenant_id_that_would_move_the_hash_tag_is_refused(tenant: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        store_key("gmigw", tenant, "job", "r1")
