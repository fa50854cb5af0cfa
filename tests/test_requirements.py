"""requirements.txt installs on the Python that Streamlit Community Cloud runs (3.12, Linux x86_64).

pip resolves the pinned requirements for Python 3.12 from wheels only (``--dry-run``: it reads the
packages' metadata from the registry, installs nothing), so a pin without a cp312 wheel, or two pins
that conflict, fail here rather than on the first deploy.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import PROJECT_ROOT

#: The Python version Community Cloud uses by default.
CLOUD_PYTHON = "3.12"


def normalized(name: str) -> str:
    """A package name as the registry compares them (PEP 503)."""
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.mark.slow
def test_requirements_resolve_to_wheels_for_python_3_12(tmp_path):
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report)]
    command += ["--python-version", CLOUD_PYTHON, "--only-binary=:all:", "--target", str(tmp_path / "target")]
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    assert "-e ." in lines  # the app imports the project's own package (src layout), installed in place
    pinned = tmp_path / "pinned.txt"  # the registry's part: the local project is built, not a wheel
    pinned.write_text("\n".join(line for line in lines if line != "-e ."))
    done = subprocess.run([*command, "-r", str(pinned)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = {
        normalized(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    pins = [line.split("==") for line in lines if "==" in line and not line.startswith("#")]
    for name, version in pins:
        assert installed.get(normalized(name)) == version, f"{name}=={version} is not what pip resolved"
    assert "streamlit" in installed and "tensorflow" in installed
