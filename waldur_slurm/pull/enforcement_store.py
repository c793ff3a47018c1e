"""The records of what enforcement changed (``enforcement.json`` in WALDUR_STATE_DIR), so that clearing a flag
restores exactly what the account had before.

Written atomically after each enforcement batch. Kept in memory, with a warning, when the directory cannot be
written. A lost or unreadable file is NOT safe the way the association ledger is: the agent then takes what
it finds (e.g. ``GrpJobs=0`` on a paused account) for the operator's own setting and leaves it when the flag
is cleared; the warning says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from waldur_slurm.pull.enforcement import FLAGS, Records
from waldur_slurm.pull.ledger import write_json_atomic

log = logging.getLogger("waldur_slurm.pull.enforcement")
FILE_NAME = "enforcement.json"


class EnforcementStore:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: Records = self._load()

    @classmethod
    def in_dir(cls, state_dir: str | None) -> EnforcementStore:
        return cls(Path(state_dir) / FILE_NAME if state_dir else None)

    def _load(self) -> Records:
        if self.path is None or not self.path.exists():
            return {}
        try:
            raw: Any = json.loads(self.path.read_text())
            accounts = raw["accounts"]
            return {str(a): {f: v for f, v in flags.items() if f in FLAGS} for a, flags in accounts.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("enforcement records %s unreadable (%s): accounts paused, downscaled or restricted before "
                        "are not restored when their flag is cleared; check them by hand", self.path, exc)
            return {}

    def save(self, records: Records) -> None:
        if records == self.records:
            return
        self.records = {a: dict(f) for a, f in records.items()}
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, {"accounts": self.records})
        except OSError as exc:
            log.warning("enforcement records %s not written (%s); kept in memory", self.path, exc)
