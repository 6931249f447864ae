"""``campaign dashboard STORE``: the campaign page of any store, running or finished, without a
cluster: a bokeh server on one interface (localhost by default) and a free port."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from campaign.page.document import ROUTE, CampaignPage


@dataclass
class PageServer:
    url: str
    http_server: Any
    bokeh_app: Any
    page: CampaignPage

    def stop(self) -> None:
        self.http_server.stop()
        self.bokeh_app.stop()
        self.page.close()


def start_page_server(store_dir: Path, address: str = "127.0.0.1", port: int = 0, refresh_s: float = 3.0,
                      allow_origins: Sequence[str] = ()) -> PageServer:
    """Start serving on the current tornado IOLoop (the caller runs it). Port 0: a free one.
    ``allow_origins``: more host:port origins whose pages may open the page's websocket (the
    local end of an ssh tunnel on another port)."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import BokehTornado
    from bokeh.server.util import bind_sockets
    from tornado import web
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    page = CampaignPage(store_dir, refresh_s=refresh_s)
    sockets, bound = bind_sockets(address, port)
    every_interface = address in ("", "0.0.0.0", "::")
    host = "localhost" if address in ("127.0.0.1", "localhost") else socket.getfqdn() if every_interface else address
    # the browser's Origin must be one of these for the page's websocket to be accepted
    names = {address, host, "127.0.0.1", "localhost", *((socket.gethostname(),) if every_interface else ())}
    origins = [f"{name}:{bound}" for name in names if name] + list(allow_origins)
    app = BokehTornado({ROUTE: Application(FunctionHandler(page.document))}, extra_websocket_origins=origins)
    app.add_handlers(r".*", [(r"/", web.RedirectHandler, {"url": ROUTE})])
    http_server = HTTPServer(app)
    http_server.add_sockets(sockets)
    app.initialize(IOLoop.current())
    app.start()
    return PageServer(f"http://{host}:{bound}{ROUTE}", http_server, app, page)
