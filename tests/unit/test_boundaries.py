"""Package boundaries (docs/conventions.md) as import-linter contracts in `.importlinter`.

The first test runs the real contracts on the repository. The others copy the packages to a
temporary folder, plant one forbidden import, and prove the same contracts then fail, so a
contract that silently checks nothing cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = (
    "kitcore",
    "shoplib",
    "monolith",
    "extracted",
    "cdc",
    "parity",
    "strangler_proxy",
    "kit",
    "migrations",
)


def _lint(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / ".importlinter"), *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_repository_keeps_every_import_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        (
            "monolith/orders/service.py",
            "from monolith.catalog import models as _planted",
            "monolith.orders reaches other modules only through their service functions",
        ),
        (
            "monolith/catalog/service.py",
            "from monolith.orders import service as _planted",
            "Monolith modules depend one way: reports -> orders -> inventory -> catalog | customers",
        ),
        (
            "shoplib/money.py",
            "import monolith.db as _planted",
            "shoplib imports none of the project packages",
        ),
        (
            "kit/commands/seed.py",
            "from monolith.seed import main as _planted",
            "The product (kit, kitcore, cdc, parity, strangler_proxy) imports nothing of the shop",
        ),
        (
            "cdc/sink.py",
            "import shoplib.db as _planted",
            "The product (kit, kitcore, cdc, parity, strangler_proxy) imports nothing of the shop",
        ),
        (
            "kit/appside/introspect.py",
            "from kit.manifest import Manifest as _planted",
            "kit.appside (run in an app's own interpreter) imports nothing of the project",
        ),
    ],
)
def test_a_planted_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, planted: str, contract: str
) -> None:
    for package in PACKAGES:
        if (ROOT / package).is_dir():
            shutil.copytree(
                ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
            )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # noqa\n")
    result = _lint(tmp_path, "--no-cache")
    assert result.returncode != 0, result.stdout
    flattened = " ".join(result.stdout.split())  # contract names wrap in the terminal
    assert f"{contract} BROKEN" in flattened, result.stdout
