"""A real nginx (Debian nginx-light) in a temp dir: a load balancer or a static file server.

Used by the replica test (nginx in front of several MetaHub processes) and by the benchmarks
(the same bytes as a static file: this machine's practical limit for a small GET).
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.servers import _PACKAGES, _Daemon, free_port

NGINX = "/usr/sbin/nginx"
_PACKAGES[NGINX] = "nginx-light"


class NginxServer(_Daemon):
    """nginx in the foreground, its prefix, logs and temp files under `tmp`.

    `server_block` is the body of one `server { ... }` (without `listen`, which this class adds
    for its own port); `http_extra` goes into the `http` block before it (upstreams, maps).
    """

    name = "nginx"

    def __init__(
        self, tmp: Path, server_block: str, *, http_extra: str = "", worker_processes: int = 1
    ) -> None:
        super().__init__(tmp)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.server_block = server_block
        self.http_extra = http_extra
        self.worker_processes = worker_processes
        self.config_path = tmp / "nginx.conf"

    def _write_config(self) -> None:
        for sub in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.tmp / sub).mkdir(exist_ok=True)
        self.config_path.write_text(
            f"""
user root;
worker_processes {self.worker_processes};
pid {self.tmp}/nginx.pid;
error_log {self.log_path} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.tmp}/client_body;
    proxy_temp_path {self.tmp}/proxy;
    fastcgi_temp_path {self.tmp}/fastcgi;
    uwsgi_temp_path {self.tmp}/uwsgi;
    scgi_temp_path {self.tmp}/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    {self.http_extra}
    server {{
        listen 127.0.0.1:{self.port};
        {self.server_block}
    }}
}}
"""
        )

    def start(self) -> None:
        self._write_config()
        self._spawn(
            [NGINX, "-p", str(self.tmp), "-c", str(self.config_path), "-g", "daemon off;"],
            self._answers,
            timeout=20,
        )

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True
