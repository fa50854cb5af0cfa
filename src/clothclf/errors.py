"""Error types raised by clothclf. All are ``ValueError`` subclasses so callers can catch one type."""

from __future__ import annotations


class ClothclfError(ValueError):
    """Base class of every error clothclf raises for bad input or state."""


class InvalidImageError(ClothclfError):
    """The input cannot be read as an image."""


class LimitExceededError(ClothclfError):
    """The input is larger than a configured limit (pixels, bytes, files, zip entries)."""


class DatasetError(ClothclfError):
    """A dataset folder or archive does not have the expected layout or content."""


class RunError(ClothclfError):
    """A run folder is missing, incomplete or cannot be written."""
