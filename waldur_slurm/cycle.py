"""What one daemon cycle did: the common currency of pull, push and the loop."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CycleReport:
    """Counters of one cycle; the loop logs them as one summary line and exports them as metrics.

    ``failed`` counts items (orders, resources) that failed permanently this cycle; ``deferred`` counts
    items left for a later cycle because of a transient failure. ``--once`` exits non-zero when
    ``failed`` is non-zero.
    """

    kind: str  # "pull", "push" or "membership"
    seen: int = 0
    done: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    stuck: int = 0  # orders given up after failing the same step cycle after cycle, and still held
    slurm_processes: int = 0
    http_requests: int = 0
    writes: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{self.kind} cycle:",
            f"seen={self.seen}",
            f"done={self.done}",
            f"failed={self.failed}",
            f"deferred={self.deferred}",
            f"skipped={self.skipped}",
            f"stuck={self.stuck}",
            f"writes={self.writes}",
            f"slurm_processes={self.slurm_processes}",
            f"http_requests={self.http_requests}",
        ]
        return " ".join(parts)
