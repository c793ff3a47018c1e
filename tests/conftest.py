"""Shared fixtures for every test directory: the real SLURM cluster and dockerd (tests/support/slurm.py)
and the Waldur stand-in (tests/support/waldur.py)."""

pytest_plugins = ["tests.support.slurm", "tests.support.waldur", "tests.support.mastermind"]
