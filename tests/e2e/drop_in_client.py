"""A client written for the real GMI request-queue API, the way its docs and public clients do it.

It knows nothing of the gateway: the test points it at the simulator (standing in for GMI) and
then at the gateway, changing only ``base_url`` and ``api_key``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

TERMINAL = {"success", "failed", "cancelled"}
MODEL = "Kling-Text2Video-V2-Master"


@dataclass(frozen=True)
class Generated:
    request_id: str
    status: str
    video_url: str
    listed: bool


def generate_video(base_url: str, api_key: str, prompt: str, *, timeout: float = 60) -> Generated:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        submitted = http.post(
            "/requests",
            json={
                "model": MODEL,
                "payload": {
                    "prompt": prompt,
                    "negative_prompt": "blurry, low quality",
                    "duration": "5",
                    "aspect_ratio": "16:9",
                    "cfg_scale": 0.5,
                },
            },
        )
        submitted.raise_for_status()
        request_id = submitted.json()["request_id"]
        deadline = time.monotonic() + timeout
        while True:
            record = http.get(f"/requests/{request_id}").raise_for_status().json()
            if record["status"] in TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        outcome = record.get("outcome") or {}
        media = outcome.get("media_urls") or []
        video_url = media[0]["url"] if media else outcome.get("video_url", "")
        listing = http.get("/requests", params={"model_id": MODEL, "limit": 100}).raise_for_status()
        listed = any(item["request_id"] == request_id for item in listing.json()["requests"])
        return Generated(request_id, record["status"], video_url, listed)
