"""The one place the package's version is written: ``clothclf.__version__``, ``clothclf --version`` and
the wheel's metadata (``[tool.setuptools.dynamic]`` in pyproject.toml) all read it. CHANGELOG.md says
what each version changed."""

__version__ = "0.2.0"
