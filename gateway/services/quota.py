"""Quota policy: what a submit costs, which periods it is charged to, and how limits are shown.

The atomic checking and reserving happens in the store (one Lua script on Redis); this module
decides the inputs (cost, UTC period keys, the tenant's limits) and renders the outcome as the
IETF httpapi ``RateLimit-Policy`` / ``RateLimit`` headers and 429 errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ("DEFAULT_VIDEO_SECONDS", "video_seconds")

DEFAULT_VIDEO_SECONDS = 5
_DURATION_KEYS = ("duration", "durationSeconds", "duration_seconds")


def video_seconds(payload: Mapping[str, Any]) -> int:
    """Seconds of video a payload asks for: its ``duration`` (Veo: ``durationSeconds``), else 5.

    The payload was validated against the model's schema already, so a value that is not a
    positive number here means the model has no duration parameter: the default applies.
    """
    for key in _DURATION_KEYS:
        value = payload.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds > 0:
            return math.ceil(seconds)
    return DEFAULT_VIDEO_SECONDS


def period_keys(now: float) -> tuple[str, str]:
    """The UTC day and month a charge at ``now`` belongs to, e.g. ``("2026-11-23", "2026-11")``."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%Y-%m")
