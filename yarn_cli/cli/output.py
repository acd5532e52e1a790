"""Machine output, kept free of rich so a --json run imports none of it."""

from __future__ import annotations

import json
import sys
from typing import Any


def print_json(data: Any) -> None:
    """The one way every command prints --json: strict JSON (NaN is a bug), on stdout only."""
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n")
