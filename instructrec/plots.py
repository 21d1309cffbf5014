"""matplotlib for the harnesses' reports: headless, and optional (a dev dependency)."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the Agg backend, or None where matplotlib is not installed
    (the markdown report stands without its plots)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
