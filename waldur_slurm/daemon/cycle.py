"""What one daemon cycle did: the common currency of pull, push and the loop."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class CycleReport:
    """Counters of one cycle; the loop logs them as one summary line and exports them as metrics.

    ``failed`` counts items (orders, resources) that failed permanently this cycle; ``deferred`` counts
    items left for a later cycle because of a transient failure. ``unreachable`` names the side (SLURM or
    Waldur) the cycle could not reach, with the reason: such a cycle did not do its work, so it is not
    progress (health turns red, ``--once`` exits non-zero) even though nothing failed for good.

    Every ``int`` field is a counter: the summary line, the JSON log fields and ``counters()`` are built
    from the fields, so a new counter is one new field here (plus its metric, if it should have one).
    """

    kind: str  # "pull", "push" or "membership"
    seen: int = 0
    done: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0
    stuck: int = 0  # orders given up after failing the same step cycle after cycle, and still held
    writes: int = 0
    slurm_processes: int = 0
    http_requests: int = 0
    notes: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    # accounts under each Waldur 8 flag after the cycle's enforcement (paused, downscaled,
    # restrict_member_access); None when the cycle did not get to enforcement
    enforced: dict[str, int] | None = None

    @property
    def progressed(self) -> bool:
        """True when the cycle reached Waldur and SLURM (as far as it needed them) and did its work."""
        return not self.unreachable

    def counters(self) -> dict[str, int]:
        """The counters by name, in declaration order (for JSON logs and tests)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", int)}

    def summary(self) -> str:
        parts = [f"{self.kind} cycle:"] + [f"{name}={value}" for name, value in self.counters().items()]
        if self.unreachable:
            parts.append("unreachable: " + "; ".join(self.unreachable) + " (work deferred to the next cycle)")
        return " ".join(parts)
