"""constraints.txt: every install (make install, the image) gets the versions CI tested."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"not an exact pin: {line!r}"
            found[canonicalize_name(name)] = pinned
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    ]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    """Fails when pyproject.toml changed without ``make lock``."""
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in constraints.txt: run make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} is outside {requirement.specifier}: run make lock"
        )


def test_this_environment_has_the_pinned_versions() -> None:
    """What the tests ran against is what the image ships."""
    checked = 0
    for name, pinned in pins().items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # a pin for another Python version's extra dependency
            continue
        assert installed == pinned, f"{name} {installed} is installed, constraints say {pinned}"
        checked += 1
    assert checked >= len(declared())


def test_the_image_installs_the_pinned_versions() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = [line for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert any("constraints.txt" in line.split() for line in copied)
    assert "pip install -c constraints.txt ." in dockerfile
