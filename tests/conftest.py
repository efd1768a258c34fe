"""Suite-wide settings: hypothesis profiles (``HYPOTHESIS_PROFILE=ci`` for more examples),
``tests/support`` on the import path, no systemd notification socket."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# Shared helpers live in tests/support, imported by module name (e.g. ``scribe_fakes``); the
# folder itself, not tests/, goes on the path so test folders never shadow the packages.
sys.path.insert(0, str(Path(__file__).parent / "support"))

settings.register_profile("default", deadline=None, max_examples=100)
settings.register_profile(
    "ci", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# A suite run from inside a systemd service must not notify that service's manager through the
# daemons it starts (the notify tests set their own socket).
for _variable in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_variable, None)
