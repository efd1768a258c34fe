"""What this process runs, as the metrics collector and the health checks read it.

The supervisor fills it in as the server and the consumer members start; readers only look,
at scrape or probe time, from the trio thread.  ``stopping`` is set on the first signal (or by
fb303 ``shutdown``, seen through the server's admission).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers import ConsumerRuntime
from pipeline.config import PipelineConfig
from pipeline.consumer_config import ConsumerSection
from pipeline.daemon import Daemon
from pipeline.storage import Storage


@dataclass
class Member:
    section: ConsumerSection
    runtime: ConsumerRuntime


@dataclass
class ProcessView:
    config: PipelineConfig
    # Whether this process runs the log server (``serve``, ``run``) or only members (``consume``).
    runs_server: bool
    daemon: Daemon | None = None
    members: list[Member] = field(default_factory=list)
    # The groups this process was asked to run (members appear as they start).
    groups: tuple[ConsumerSection, ...] = ()
    storage: Storage | None = None
    stopping: bool = False

    @property
    def is_stopping(self) -> bool:
        if self.stopping:
            return True
        return self.daemon is not None and self.daemon.service.admission.stopping
