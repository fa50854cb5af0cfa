"""One version, read from clothclf/_version.py by the package, the command and the wheel's metadata."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest
from helpers import PROJECT_ROOT
from test_install import build_wheel

import clothclf
from clothclf._version import __version__


def test_the_package_and_the_command_report_the_version_module():
    shown = subprocess.run(
        [sys.executable, "-m", "clothclf", "--version"], capture_output=True, text=True, check=True
    )
    assert clothclf.__version__ == __version__
    assert shown.stdout.strip() == f"clothclf {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_the_wheel_takes_its_version_from_the_version_module():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]  # no second copy to drift
    assert "version" in project["project"]["dynamic"]
    module, _, name = project["tool"]["setuptools"]["dynamic"]["version"]["attr"].rpartition(".")
    assert getattr(importlib.import_module(module), name) == __version__


@pytest.mark.slow
def test_the_built_wheel_carries_the_version(tmp_path):
    wheel = build_wheel(tmp_path)  # 6 s on an idle 2-core machine
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"clothclf-{__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {__version__}\n" in metadata


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_the_changelog_names_the_version():
    changelog = (PROJECT_ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    released = [heading for heading in headings if heading != "Unreleased"]
    if headings[0] == "Unreleased":  # the version is what the unreleased changes ship as
        unreleased = changelog.split("\n## [")[1]
        assert f"as {__version__}" in unreleased
        assert all(version_key(v) < version_key(__version__) for v in released)
    else:
        assert headings[0] == __version__
