"""The README's processor table, generated from the classes: ``python -m dynfx.table``."""

from __future__ import annotations

import inspect

from . import PROCESSORS


def _defaults(cls) -> str:
    sig = inspect.signature(cls.__init__)
    shown = []
    for name in ("knee_type", "smooth_type", "detector", "num_bands"):
        if name in sig.parameters:
            default = sig.parameters[name].default
            if name == "detector" and default is None:
                default = cls._default_detector
            shown.append(f"{name}={default!r}")
    return ", ".join(shown)


def _params(cls) -> str:
    proc = cls()
    if hasattr(proc, "band_param_names"):
        table = proc.params
        per_band = [
            f"band{{i}}_{n} {table[f'band0_{n}'].range_str()}" for n in proc.band_param_names
        ]
        return "; ".join(per_band) + (
            "; then crossover{i}_freq for i < num_bands - 1: slice i of "
            "[20 Hz, min(20 kHz, 0.45 fs)] (log)"
        )
    return "; ".join(f"{n} {spec.range_str()}" for n, spec in proc.params.items())


def processor_table() -> str:
    """Markdown table: class, parameter count (3 bands for multi-band), defaults, parameters."""
    lines = [
        "| class | params | defaults | parameters: range (scale) |",
        "|---|---|---|---|",
    ]
    for cls in PROCESSORS:
        count = cls().count_num_parameters()
        lines.append(f"| `{cls.__name__}` | {count} | {_defaults(cls)} | {_params(cls)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(processor_table())
