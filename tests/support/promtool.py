"""``promtool check metrics`` on a real scrape (Debian package ``prometheus``)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

MISSING = "promtool not found: install the Debian package prometheus (make tools does)"


def promtool_check(exposition: bytes) -> str:
    """Run ``promtool check metrics``; return its complaints ("" when clean)."""
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    done = subprocess.run(
        [binary, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    return (done.stdout + done.stderr).decode() if done.returncode else ""
