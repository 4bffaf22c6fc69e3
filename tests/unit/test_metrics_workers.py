"""Metrics: a worker that died leaves no live gauge behind; latency buckets reach far enough."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import metrics
from gateway.settings import MAX_CONNECT_TIMEOUT, MAX_READ_TIMEOUT


def test_live_gauges_of_dead_workers_are_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    for pid in (gone, str(os.getpid())):
        for mode in ("livesum", "livemax"):
            (tmp_path / f"gauge_{mode}_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{gone}.db").write_bytes(b"")  # counters of the dead still count
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics.forget_dead_workers()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"counter_{gone}.db",
        f"gauge_livemax_{os.getpid()}.db",
        f"gauge_livesum_{os.getpid()}.db",
    ]


def test_the_longest_upstream_call_the_settings_allow_lands_in_a_finite_bucket() -> None:
    """The buckets ended at 30 s, the default read timeout: every timed-out call, and every
    call up to the 90 s a read timeout may be set to, read as 30 s in histogram_quantile."""
    longest = MAX_CONNECT_TIMEOUT + MAX_READ_TIMEOUT
    metrics.UPSTREAM_REQUEST_DURATION.labels("POST /requests").observe(longest)
    finite = [
        sample
        for sample in metrics.UPSTREAM_REQUEST_DURATION.collect()[0].samples
        if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
    ]
    assert any(float(s.labels["le"]) >= longest and s.value >= 1 for s in finite)
