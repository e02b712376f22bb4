"""An ASGI app served by a real uvicorn on 127.0.0.1 and a free port, in a thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from control.postgres import free_port


class LiveServer:
    def __init__(self, app: Any, *, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def plane(self) -> Any:
        return self.app.state.plane

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def token(self, name: str = "live", role: str = "admin") -> str:
        return self.plane.tokens.create(name, role)[1]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
