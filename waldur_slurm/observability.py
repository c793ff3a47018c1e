"""``python -m waldur_slurm.observability check-heartbeat PATH``, as 1.0 healthchecks call it.

The module moved to ``waldur_slurm.tools.observability``; this keeps existing container healthchecks working.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from waldur_slurm.tools.observability import _probe

    sys.exit(_probe())
