"""``python -m waldur_standin --port P --profile 8|2024 [--seed] [--load state.json]``"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiohttp import web

from .app import HOLDER, create_app
from .control import seed_demo
from .store import PROFILES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="waldur_standin", description="Waldur Mastermind stand-in (marketplace subset).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--profile", choices=PROFILES, default="8", help="8 = the 8.x API (default); 2024 = Oct-2024 server")
    p.add_argument("--control-token", default=None, help="require this X-Control-Token on /control/ requests")
    p.add_argument("--load", type=Path, help="start from a state file written by POST /control/dump")
    p.add_argument("--seed", action="store_true", help="create a demo provider, offering, project and users")
    p.add_argument("--provider-token", default=None, help="token of the seeded provider owner (default: random)")
    p.add_argument("--log-bodies", action="store_true", help="keep request and response bodies in the request log")
    args = p.parse_args(argv)

    app = create_app(args.profile, control_token=args.control_token, log_bodies=args.log_bodies)
    store = app[HOLDER].store
    if args.load:
        store.load(json.loads(args.load.read_text()))
    if args.seed:
        info = seed_demo(store, provider_token=args.provider_token)
        print(json.dumps({"url": f"http://{args.host}:{args.port}", "profile": args.profile, **info}), flush=True)
    print(f"waldur_standin profile={args.profile} listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
