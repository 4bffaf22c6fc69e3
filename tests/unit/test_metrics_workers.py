"""Multiprocess metrics: a worker that died leaves no live gauge behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import metrics


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
