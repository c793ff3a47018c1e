"""Issue 12 items 4/5: every size-suffixed TRES value is read by its suffix; an unreadable value fails only
its own record (sacct row) or account (GrpTRESMins), with a message naming the TRES and the value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from waldur_slurm.slurm.cli.parsing import parse_jobs, parse_state
from waldur_slurm.slurm.cli.parsing import SlurmParseError, parse_limits, parse_tres
from waldur_slurm.push.usage import aggregate


@pytest.mark.parametrize(
    ("text", "key", "mb"),
    [
        ("bb/cray=100M", "bb/cray", Decimal(100)),  # before the fix: 100 x 2^20
        ("bb/datawarp=2G", "bb/datawarp", Decimal(2048)),
        ("gres/gpumem=16G", "gres/gpumem", Decimal(16384)),
        ("vmem=1T", "vmem", Decimal(1024 * 1024)),
        ("fs/disk=512K", "fs/disk", Decimal("0.5")),
        ("bb/cray=300", "bb/cray", Decimal(300)),  # bare size: MB, like mem
        ("billing=2K", "billing", Decimal(2048)),  # a count keeps its 1024 steps
        ("cpu=4", "cpu", Decimal(4)),
    ],
)
def test_sizes_are_read_by_their_suffix(text: str, key: str, mb: Decimal) -> None:
    assert parse_tres(text)[key] == mb


@pytest.mark.parametrize("text", ["mem=5?", "bb/cray=1E", "gres/gpumem=3X", "cpu=" + "9" * 25])
def test_unknown_suffix_or_huge_value_is_a_clear_error(text: str) -> None:
    key, _, value = text.partition("=")
    with pytest.raises(SlurmParseError) as caught:
        parse_tres(text)
    assert repr(key) in str(caught.value) and value[:20] in str(caught.value)


def test_an_unreadable_job_row_is_left_out_alone() -> None:
    rows = "\n".join([
        "1|acc|alice|COMPLETED|60|cpu=1,mem=100M|cpu=1,mem=100M|2026-01-01T00:00:00|2026-01-01T00:01:00",
        "2|acc|bob|COMPLETED|60|cpu=1,mem=5?|cpu=1,mem=5?|2026-01-01T00:00:00|2026-01-01T00:01:00",
        "3|acc|carol|COMPLETED|¹|cpu=1|cpu=1|2026-01-01T00:00:00|2026-01-01T00:01:00",
    ])
    records = parse_jobs(rows)  # before the fix: SlurmParseError for the whole sacct output
    assert [r.problem is None for r in records] == [True, False, False]
    agg = aggregate(records, ["cpu", "mem"])
    assert agg.accounts["acc"].totals == {"cpu": 60, "mem": 6000}
    assert len(agg.unusable) == 2 and "job 2 (account acc): TRES 'mem' = '5?': unknown unit suffix '?'" in agg.unusable[0]


def test_an_unreadable_limit_fails_only_its_account() -> None:
    dump = "\n".join(["big|root||cpu=5,mem=1?|c|o|d", "fine|root||cpu=5,mem=1T|c|o|d"])
    state = parse_state(dump, "")
    assert state.accounts["fine"].limits == {"cpu": 5, "mem": 1048576} and state.accounts["fine"].limits_problem is None
    assert state.accounts["big"].limits == {} and "unknown unit suffix '?'" in (state.accounts["big"].limits_problem or "")
    assert parse_limits("mem=1T") == {"mem": 1048576}
