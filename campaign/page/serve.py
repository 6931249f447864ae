"""``campaign dashboard STORE``: the campaign page of any store, running or finished, without a
cluster: a bokeh server on one interface (localhost by default) and a free port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from campaign.page.document import ROUTE, CampaignPage


@dataclass
class PageServer:
    url: str
    http_server: Any
    bokeh_app: Any

    def stop(self) -> None:
        self.http_server.stop()
        self.bokeh_app.stop()


def start_page_server(store_dir: Path, address: str = "127.0.0.1", port: int = 0,
                      refresh_s: float = 3.0) -> PageServer:
    """Start serving on the current tornado IOLoop (the caller runs it). Port 0: a free one."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import BokehTornado
    from bokeh.server.util import bind_sockets
    from tornado import web
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    page = CampaignPage(store_dir, refresh_s=refresh_s)
    sockets, bound = bind_sockets(address, port)
    host = "localhost" if address in ("127.0.0.1", "localhost") else address
    # the browser's Origin must be one of these for the page's websocket to be accepted
    origins = [f"{name}:{bound}" for name in {address, host, "127.0.0.1", "localhost"}]
    app = BokehTornado({ROUTE: Application(FunctionHandler(page.document))}, extra_websocket_origins=origins)
    app.add_handlers(r".*", [(r"/", web.RedirectHandler, {"url": ROUTE})])
    http_server = HTTPServer(app)
    http_server.add_sockets(sockets)
    app.initialize(IOLoop.current())
    app.start()
    return PageServer(f"http://{host}:{bound}{ROUTE}", http_server, app)
