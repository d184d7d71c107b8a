"""End-to-end fixtures: a demo manifest in a temporary folder, and a guarantee that every
process `kit up` started there is stopped by pid, even when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.runtime.demo_manifest import write_demo_manifest
from kit.runtime.procs import RunDir
from kit.runtime.supervisor import stop_all


@pytest.fixture
def demo_rundir(tmp_path: Path) -> Iterator[RunDir]:
    """The run folder of a demo in tmp_path; whatever is recorded there is stopped at teardown."""
    var = tmp_path / "demo" / "var"
    rundir = RunDir(var / "run", var / "log")
    try:
        yield rundir
    finally:
        stop_all(rundir, timeout_s=5)


@pytest.fixture
def demo_manifest(tmp_path: Path, demo_rundir: RunDir) -> Path:
    """A manifest on free ports with everything under tmp_path/demo."""
    return write_demo_manifest(tmp_path / "demo")
