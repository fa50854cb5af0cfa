"""The package list, plus the shipped model as package data (the rest of the metadata is in pyproject.toml).

``models/default`` stays where the app and the docs expect it; the build maps it to the package
``clothclf.default_model``, so a wheel carries its LiteRT model and JSON files (not ``model.keras``)
and ``clothclf.config.Paths`` finds them when the project folder is absent.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["clothclf", "clothclf.*"]), "clothclf.default_model"],
    package_dir={"clothclf.default_model": "models/default"},
    package_data={"clothclf.default_model": ["*.tflite", "*.npz", "*.json"]},
)
