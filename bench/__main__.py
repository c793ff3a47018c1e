"""``python -m bench [--quick] [options]``: run the benchmarks, write results, check the targets.

Full mode (default): push N=100/1,000/3,000, pull N=10/100/300, docker push N=1,000 and pull N=100, three runs
each (about half an hour on the 2-core test machine; see docs/benchmarks.md). ``--quick``: small N, one run,
the CI smoke test. Output: ``bench/results/<UTC timestamp>-<mode>/`` with ``results.json``, ``report.md`` and
PNG plots; ``--publish`` also copies the report and plots to ``docs/benchmarks/``.

Exit status: 0 when every count target holds (SLURM processes, zero writes, every order done), 1 when one
does not, 2 when the harness itself failed. Time, memory and ratio targets are reported, never enforced here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from pathlib import Path

from .common import REPO, log, use_standin

FULL = {"push_n": [100, 1000, 3000], "pull_n": [10, 100, 300], "docker_push_n": [1000], "docker_pull_n": [100],
        "runs": 3, "baseline_sample": 100}
QUICK = {"push_n": [4, 8], "pull_n": [3], "docker_push_n": [8], "docker_pull_n": [3], "runs": 1, "baseline_sample": 8}
DOCS_DIR = REPO / "docs" / "benchmarks"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke mode: small N, one run, count targets only")
    p.add_argument("--push-n", type=_ints, help="comma-separated N for the push world (default 100,1000,3000)")
    p.add_argument("--pull-n", type=_ints, help="comma-separated N for the pull orders (default 10,100,300)")
    p.add_argument("--docker-push-n", type=_ints, help="push N also run in docker mode (default 1000)")
    p.add_argument("--docker-pull-n", type=_ints, help="pull N also run in docker mode (default 100)")
    p.add_argument("--no-docker", action="store_true", help="skip the docker-mode rows")
    p.add_argument("--runs", type=int, help="runs per row (default 3; quick 1)")
    p.add_argument("--baseline-sample", type=int, help="accounts the baseline reads at most per N (default 100)")
    p.add_argument("--profile", choices=("8", "2024"), default="8", help="stand-in server profile")
    p.add_argument("--wait-quiet", type=float, metavar="SECONDS",
                   help="first wait up to SECONDS until no other pytest session has run for 30 s "
                        "(default: 2400 in full mode, 0 in quick mode)")
    p.add_argument("--out", type=Path, help="output directory (default bench/results/<timestamp>-<mode>)")
    p.add_argument("--publish", action="store_true", help="copy report.md and the plots to docs/benchmarks/")
    p.add_argument("--report-only", type=Path, metavar="RESULTS_JSON", help="rebuild report and plots from a results.json")
    return p.parse_args(argv)


def render(results: dict, out_dir: Path, publish: bool) -> list[dict]:
    from .report import markdown, plot, targets

    try:
        plots = plot(results, out_dir)
    except Exception as exc:  # noqa: BLE001 - a missing matplotlib must not lose the numbers
        log(f"plots not drawn: {exc!r}")
        plots = []
    (out_dir / "report.md").write_text(markdown(results, [str(p) for p in plots]))
    if publish:
        DOCS_DIR.mkdir(parents=True, exist_ok=True)
        for old in DOCS_DIR.glob("*.png"):
            old.unlink()
        for p in plots:
            shutil.copy2(p, DOCS_DIR / p.name)
        (DOCS_DIR / "results.md").write_text(markdown(results, [str(p) for p in plots], plot_prefix=""))
        (DOCS_DIR / "summary.json").write_text(json.dumps(_compact(results), indent=1) + "\n")
        log(f"published report and {len(plots)} plots to {DOCS_DIR.relative_to(REPO)}/")
    return targets(results)


def _compact(results: dict) -> dict:
    """What docs/ keeps: the summaries and targets, not the raw samples."""
    from .report import summaries, targets

    return {"meta": results.get("meta"), "summary": summaries(results), "baseline": results.get("baseline"),
            "targets": targets(results)}


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.report_only:
        results = json.loads(args.report_only.read_text())
        checks = render(results, args.report_only.parent, args.publish)
        return _verdict(checks)

    use_standin()
    from .scenarios import Plan, Runner

    base = dict(QUICK if args.quick else FULL)
    for key in ("push_n", "pull_n", "docker_push_n", "docker_pull_n", "runs", "baseline_sample"):
        value = getattr(args, key)
        if value is not None:
            base[key] = value
    if args.no_docker:
        base["docker_push_n"], base["docker_pull_n"] = [], []
    base["docker_push_n"] = [n for n in base["docker_push_n"] if n in base["push_n"]]
    base["docker_pull_n"] = [n for n in base["docker_pull_n"] if n in base["pull_n"]]
    plan = Plan(profile=args.profile, quick=args.quick, **base)
    mode = "quick" if args.quick else "full"
    out_dir = args.out or REPO / "bench" / "results" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{mode}"
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"{mode} run -> {out_dir}")
    runner = Runner(plan, out_dir)
    wait = args.wait_quiet if args.wait_quiet is not None else (0 if args.quick else 2400)
    if wait > 0:
        from .quiet import wait_quiet

        t0 = time.monotonic()
        quiet = wait_quiet(wait)
        runner.quiet_wait = {"waited_s": round(time.monotonic() - t0), "quiet": quiet}
        log("machine quiet" if quiet else f"machine still busy after {wait:.0f} s; running anyway (recorded)")
    try:
        results = runner.run().as_json()
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        log(f"the harness failed; partial results in {out_dir / 'results.json'}")
        return 2
    checks = render(results, out_dir, args.publish)
    print((out_dir / "report.md").read_text())
    return _verdict(checks)


def _verdict(checks: list[dict]) -> int:
    broken = [c for c in checks if c["kind"] == "count" and c["ok"] is False]
    missed = [c for c in checks if c["kind"] != "count" and c["ok"] is False]
    for c in missed:
        log(f"target missed (reported, not enforced): {c['target']}: {c['measured']} (limit {c['limit']})")
    for c in broken:
        log(f"COUNT TARGET VIOLATED: {c['target']}: {c['measured']} (limit {c['limit']})")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
