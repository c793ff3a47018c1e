"""The aiohttp application: the API routes of the chosen profile, the control API and the middlewares."""

from __future__ import annotations

from aiohttp import web

from .api import Api
from .control import Control, Holder
from .http import Recorder, recording_middleware
from .store import Store

HOLDER = web.AppKey("holder", Holder)


def create_app(
    profile: str = "8",
    *,
    control_token: str | None = None,
    log_bodies: bool = False,
    store: Store | None = None,
) -> web.Application:
    holder = Holder(store or Store(profile), Recorder(log_bodies=log_bodies), control_token)
    control = Control(holder)
    app = web.Application(middlewares=[control.middleware(), recording_middleware(holder.recorder)])
    app[HOLDER] = holder
    app.router.add_routes(Api(holder).routes())
    app.router.add_routes(control.routes())
    return app
