"""Benchmarks of the agent against the real local SLURM cluster and the Waldur stand-in (issue 7).

``bench/run`` (or ``python -m bench``) runs every scenario and writes JSON, a markdown table and PNG plots
into ``bench/results/<timestamp>/``; ``--quick`` is the CI smoke mode (small N, one run, count targets only).
Every measured cycle runs in its own agent process (``bench.worker``); the stand-in runs in the driver.
"""
