"""The kit is a product, the shop its example: the wheel installs only the product's packages,
and importing the CLI loads nothing of the shop (issue 14, item 1)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PRODUCT = {"kit", "kitcore", "cdc", "parity", "strangler_proxy"}
SHOP = ("monolith", "extracted", "migrations", "shoplib")


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked and new files: the build writes nothing into the tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_wheel_installs_only_the_product_packages(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "src")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "out", source],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "out").glob("strangler_kit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info/" not in n}
    assert top == PRODUCT
    assert "kit/appside/introspect.py" in names  # run by path in the app's interpreter
    assert any(n.startswith("strangler_proxy/") and n.endswith(".html") for n in names)


def test_kit_help_loads_no_command_and_no_command_loads_the_shop(tmp_path: Path) -> None:
    probe = (
        "import importlib, sys\n"
        "import kit.cli\n"
        "kit.cli.main(['--help'], standalone_mode=False)\n"
        "loaded_by_help = sorted(m for m in sys.modules if m.startswith('kit.commands.'))\n"
        "for module, _help in kit.cli.COMMANDS.values():\n"
        "    importlib.import_module(module)\n"
        f"shop = sorted(m for m in sys.modules if m.split('.')[0] in {SHOP!r})\n"
        "print(loaded_by_help, shop)\n"
    )
    # from another folder, so the repository's own packages are not on sys.path by accident
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[] []"), done.stdout  # `kit --help` printed first
