"""scribe-pipeline's application: configuration, routing, admission, daemons, the CLI.

The only package that wires `scribe_compat`, `journal` and `consumers` together.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
