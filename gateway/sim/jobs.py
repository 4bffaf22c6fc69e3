"""Simulated jobs: the upstream state machine (spec §5), computed from the clock on each read.

A job draws its phase durations at submit; its status at any moment follows from them, so the
simulator needs no background task and a fake clock drives it exactly.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = ("Job", "JobBook", "OutcomeShape")

OutcomeShape = Literal["media_urls", "legacy", "both"]
Fate = Literal["success", "failed", "policy", "stuck", "rejected"]

ORG_ID = "63729242-1870-4ff4-80b0-d485980ae31c"
USER_ID = "b1f0c7a2-5d3e-4c8e-9a61-2f4d7e9c0b13"
MEDIA_BASE = "https://storage.googleapis.com/gmi-video-assests-prod/user-assests"
POLICY_ERROR = {
    "code": 400,
    "message": "Generation rejected; please review the prompt and parameters then retry",
    "status": "INVALID_INPUT",
}
FAILURE_ERROR = {"code": 500, "message": "Failed to generate video", "status": "INTERNAL"}
REJECTED_ERROR = {
    "code": 400,
    "message": "Backend error (400). Please try again.",
    "status": "INVALID_INPUT",
}


@dataclass(slots=True)
class Job:
    request_id: str
    model: str
    payload: msgspec.Raw
    created: float
    phases: tuple[float, float, float]  # queued, dispatched, processing durations (seconds)
    fate: Fate
    media_number: int
    cancelled_at: float | None = None

    def status_at(self, now: float) -> tuple[str, float]:
        """The status at ``now`` and when it began."""
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "cancelled", self.cancelled_at
        if self.fate == "stuck":
            return "queued", self.created
        if self.fate == "rejected":  # blocked at submit, yet listed (spec §5, the 500 case)
            return "failed", self.created
        queued, dispatched, processing = self.phases
        started = self.created
        for status, length in (("queued", queued), ("dispatched", dispatched)):
            if now < started + length:
                return status, started
            started += length
        if self.fate == "policy":
            return "failed", started
        if now < started + processing:
            return "processing", started
        return ("failed" if self.fate == "failed" else "success"), started + processing

    def record(self, now: float, *, shape: OutcomeShape, string_errors: bool) -> dict[str, Any]:
        status, since = self.status_at(now)
        return {
            "request_id": self.request_id,
            "org_id": ORG_ID,
            "user_id": USER_ID,
            "model": self.model,
            "status": status,
            "is_public": False,
            "payload": self.payload,
            "outcome": self._outcome(status, shape, string_errors),
            "created_at": int(self.created),
            "updated_at": int(since),
            "queued_at": int(self.created),
        }

    def _outcome(self, status: str, shape: OutcomeShape, string_errors: bool) -> Any:
        if status == "success":
            url = f"{MEDIA_BASE}/{ORG_ID}/{self.media_number}/sample_0.mp4"
            outcome: dict[str, Any] = {}
            if shape in ("media_urls", "both"):
                outcome["media_urls"] = [{"id": "0", "url": url}]
            outcome["thumbnail_image_url"] = url
            if shape in ("legacy", "both"):
                outcome["video_url"] = url
            return outcome
        if status == "failed":
            error = {"policy": POLICY_ERROR, "rejected": REJECTED_ERROR}.get(
                self.fate, FAILURE_ERROR
            )
            return {"error": error["message"] if string_errors else error}
        return None


class JobBook:
    """Every job the simulator accepted, newest last."""

    def __init__(self, *, time_scale: float, failure_rate: float, rng: random.Random) -> None:
        self._time_scale = time_scale
        self._failure_rate = failure_rate
        self._rng = rng
        self.jobs: dict[str, Job] = {}

    def create(
        self,
        model: str,
        payload: msgspec.Raw,
        prompt: str,
        now: float,
        *,
        fate: Fate | None = None,
        sync: bool = False,
    ) -> Job:
        """A new job; a ``sync`` one has ended by the time its submit is answered."""
        if fate is None:
            fate = self._fate(prompt)
        rng = self._rng
        length = 2.0 if str(msgspec.json.decode(payload).get("duration", "5")) == "10" else 1.0
        phases = (
            rng.uniform(2, 10) * self._time_scale,
            rng.uniform(1, 5) * self._time_scale,
            rng.uniform(90, 300) * length * self._time_scale,
        )
        if sync:
            phases = (0.0, 0.0, 0.0)
            fate = "success" if fate == "stuck" else fate
        job = Job(
            request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            model=model,
            payload=payload,
            created=now,
            phases=phases,
            fate=fate,
            media_number=rng.getrandbits(63),
        )
        self.jobs[job.request_id] = job
        return job

    def _fate(self, prompt: str) -> Fate:
        if "[sim:stuck]" in prompt:
            return "stuck"
        if "[sim:policy]" in prompt:
            return "policy"
        if "[sim:fail]" in prompt or self._rng.random() < self._failure_rate:
            return "failed"
        return "success"
