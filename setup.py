"""The package list (src layout), plus the shipped model as package data (the rest of the metadata is in
pyproject.toml).

The package lives in ``src/``, so a checkout folder named ``clothclf`` (git's default) cannot shadow it,
and an editable install is a plain path entry. ``models/default`` stays where the app and the docs expect
it; building a wheel copies its LiteRT model and JSON files (not ``model.keras``) into the package as
``clothclf/default_model``, where ``clothclf.config.Paths`` finds them when the project folder is absent.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

SHIPPED_MODEL = Path("models", "default")
SHIPPED_FILES = ("*.tflite", "*.npz", "*.json")


class BuildWithShippedModel(build_py):
    """``build_py`` that also copies the shipped model into the built package (not in editable mode,
    where ``Paths`` reads ``models/default`` in place)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib, "clothclf", "default_model")
        for pattern in SHIPPED_FILES:
            for source in sorted(SHIPPED_MODEL.glob(pattern)):
                self.mkpath(str(target))
                self.copy_file(str(source), str(target / source.name))


setup(
    package_dir={"": "src"},
    packages=find_packages(where="src", include=["clothclf", "clothclf.*"]),
    cmdclass={"build_py": BuildWithShippedModel},
)
