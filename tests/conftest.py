"""Shared fixtures: prerequisites that fail loudly in CI and skip with a reason locally."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from evpnd import netns

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# Captured ExaBGP output and FRR state (copied from the project's shared data, so the
# repository is complete on its own).
SAMPLES = REPO / "tests" / "data" / "exabgp-samples"


def pytest_configure(config: pytest.Config) -> None:
    # A test run stopped with SIGTERM (CI's limit, a developer's kill) removes its
    # namespaces and the processes in them: fixtures unwind as after Ctrl-C.
    netns.unwind_on_sigterm()


def require(condition: bool, reason: str) -> None:
    """Integration prerequisites: a hard failure in CI, a visible skip elsewhere."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    require(os.geteuid() == 0, "needs root to create network namespaces")


def require_program(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/lib/frr/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None
    )
    require(path is not None, f"{name} not found (Debian package {package})")
    assert path is not None
    return path


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace, removed (with anything running in it) even on failure."""
    require_root()
    with netns.temporary() as name:
        yield name


@pytest.fixture
def ns_factory() -> Iterator:
    require_root()
    created: list[str] = []

    def make(prefix: str = "evt") -> str:
        name = netns.create(netns.unique_name(prefix))
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(created):
            netns.remove(name)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    require(SHARED.is_dir(), f"{SHARED} (the project's shared/ data) is missing")
    return SHARED
