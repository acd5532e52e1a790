"""What people type and read: byte counts (one formatter for every message and table) and comma-separated
lists of names (one reading for every flag that takes them)."""

from __future__ import annotations


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def split_names(value: str | list | tuple) -> list[str]:
    """``"a, b,,c"`` (or a sequence of names) -> ``["a", "b", "c"]``: stripped, empty parts dropped, order kept."""
    parts = value.split(",") if isinstance(value, str) else value
    return [str(part).strip() for part in parts if str(part).strip()]
