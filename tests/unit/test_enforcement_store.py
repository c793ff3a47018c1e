"""The enforcement records on disk: atomic, reloaded by a new process, kept in memory when unwritable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from waldur_slurm.pull.enforcement_store import EnforcementStore

RECORDS = {"acc1": {"paused": {"grp_jobs": 7, "grp_submit_jobs": None}}}


def test_round_trip_through_a_new_store(tmp_path: Path) -> None:
    store = EnforcementStore.in_dir(str(tmp_path / "state"))
    store.save(RECORDS)
    assert EnforcementStore.in_dir(str(tmp_path / "state")).records == RECORDS
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["enforcement.json"]  # no temporary left


def test_unwritable_directory_keeps_the_records_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = EnforcementStore.in_dir(str(blocker / "state"))
    with caplog.at_level(logging.WARNING, logger="waldur_slurm.pull.enforcement"):
        store.save(RECORDS)
    assert store.records == RECORDS
    assert "not written" in caplog.text and "kept in memory" in caplog.text


def test_unreadable_file_is_named_and_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "enforcement.json").write_text("{broken")
    with caplog.at_level(logging.WARNING, logger="waldur_slurm.pull.enforcement"):
        store = EnforcementStore.in_dir(str(tmp_path))
    assert store.records == {}
    assert "unreadable" in caplog.text and "check them by hand" in caplog.text


def test_unknown_flags_in_the_file_are_dropped(tmp_path: Path) -> None:
    (tmp_path / "enforcement.json").write_text('{"accounts": {"a": {"paused": {}, "frozen": 1}}}')
    assert EnforcementStore.in_dir(str(tmp_path)).records == {"a": {"paused": {}}}
