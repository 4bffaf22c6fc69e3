"""The simulated model catalog: ids, details and their parameter schemas (``catalog.json``).

The Kling-Text2Video-V2-Master detail is the spec's composed example; the §10.3 siblings carry
their documented parameters; other listed ids get a minimal prompt-only detail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec

__all__ = ("Catalog", "load_catalog")


@dataclass(frozen=True, slots=True)
class Catalog:
    """Pre-encoded bodies (served as-is), the parameter specs used to validate submits, and
    the models whose detail says ``"delivery_mode": "sync"`` (spec §3: the POST blocks until
    the job is done)."""

    ids_body: bytes
    detail_bodies: dict[str, bytes]
    parameters: dict[str, list[dict[str, Any]]]
    sync_models: frozenset[str]


def load_catalog(path: Path | None = None) -> Catalog:
    """The built-in catalog, or the one in ``path`` (same shape: ``model_ids`` and ``details``),
    for trying the gateway against a catalog of your own."""
    source = path or files("gateway.sim").joinpath("catalog.json")
    data = json.loads(source.read_text(encoding="utf-8"))
    details: dict[str, dict[str, Any]] = data["details"]
    return Catalog(
        ids_body=msgspec.json.encode({"model_ids": data["model_ids"]}),
        detail_bodies={m: msgspec.json.encode(d) for m, d in details.items()},
        parameters={m: d.get("parameters") or [] for m, d in details.items()},
        sync_models=frozenset(m for m, d in details.items() if d.get("delivery_mode") == "sync"),
    )
