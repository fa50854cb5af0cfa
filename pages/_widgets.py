"""Streamlit widgets built from the library's declarations: one input per training option.

A training option is declared once on :class:`clothclf.config.TrainConfig` (label, help, bounds,
choices); :func:`option_input` turns it into the matching widget, so a new option needs no page code.
"""

from __future__ import annotations

from typing import Any

from clothclf.config import default, options


def _number_format(value: float, step: float | None) -> str:
    """Scientific notation for small rates (1.0e-04), two decimals otherwise."""
    return "%.1e" if 0 < (step or value or 1.0) < 1e-2 else "%.2f"


def option_input(container: Any, name: str, key: str, value: Any = None) -> Any:
    """An input for the training option ``name`` in ``container`` (``st`` or a column), with the label,
    help, bounds and choices its field declares; its default value unless ``value`` is given."""
    spec = options()[name]
    value = default(name) if value is None else value
    if isinstance(value, bool):
        return container.toggle(spec.label, value=value, help=spec.help, key=key)
    if spec.choices or spec.presets:
        values = list(spec.choices or spec.presets)
        return container.selectbox(spec.label, values, index=values.index(value), help=spec.help, key=key)
    low = spec.minimum if spec.minimum is not None else spec.above
    high = spec.maximum if spec.maximum is not None else spec.below
    if isinstance(value, int):
        step = int(spec.step or 1)
        low, high = (None if b is None else int(b) for b in (low, high))
        return int(container.number_input(spec.label, low, high, value, step=step, help=spec.help, key=key))
    low, high = (None if b is None else float(b) for b in (low, high))
    step = float(spec.step or 0.01)
    number = container.number_input(
        spec.label,
        low,
        high,
        float(value),
        step=step,
        format=_number_format(value, step),
        help=spec.help,
        key=key,
    )
    return float(number)
