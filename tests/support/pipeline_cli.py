"""What tests of the `pipeline` command and of coordinators share."""

from __future__ import annotations

import sys

from consumers import Lease

# The CLI in a fresh interpreter, as a user runs it (without depending on the installed script).
PIPELINE = [sys.executable, "-c", "from pipeline.cli import main; main()"]


class IgnoringListener:
    """An ownership listener for members whose partitions the test does not consume."""

    async def assigned(self, lease: Lease) -> None:
        pass

    async def revoking(self, lease: Lease) -> None:
        pass

    def lost(self, lease: Lease) -> None:
        pass
