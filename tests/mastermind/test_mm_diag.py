"""--diag against the REAL Mastermind (Oct 2024) with the provider's token, as a site runs it.

The 2024 server shows its version to staff only (403 to the provider): that is not "unreachable", and every
later check still runs. Enforcement is not available on that server, and --diag says so.
"""

from __future__ import annotations

import pytest

from tests.mastermind.conftest import Site

pytestmark = [pytest.mark.mastermind, pytest.mark.slurm]


def checks_of(out: str) -> dict[str, tuple[bool, str]]:
    found = {}
    for line in out.splitlines():
        if line[:1] in ("✔", "✘") and ":" in line:
            name, detail = line[1:].split(":", 1)
            found[name.strip()] = (line.startswith("✔"), detail.strip())
    return found


def test_diag_with_the_providers_token(site: Site) -> None:
    # the test world's components differ from the TRES file: --load-components brings them in line first
    loaded = site.pull("--load-components")  # the TRES file of SLURM_TRES_CONFIG_PATH
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr[-3000:]
    run = site.pull("--diag")
    out = run.stdout + run.stderr
    checks = checks_of(out)
    assert checks, out
    reachable = checks["Waldur API reachable"]
    assert reachable[0] and "server version not shown (staff only) (API: 2024" in reachable[1], out
    assert checks["API token valid"][0], out
    assert checks["offering exists and can be managed"][0], out
    assert checks["offering components match the TRES file"][0], out
    enforcement = checks["enforcement (paused, downscaled, restrict_member_access)"]
    assert enforcement[1].startswith("not available on this server"), out
    assert run.returncode == 0 and "all 10 checks passed" in out, out
    assert site.world.agent_token not in out
