"""A latency-adding HTTP/1.1 forwarding proxy on 127.0.0.1, in front of the moto server.

Every request waits ``latency`` seconds, then is forwarded unchanged over a
keep-alive connection to the upstream (one per client connection, as a real
network path would keep one TCP connection per client connection). Clients point
their ``endpoint_url`` at the proxy. Run it as its own process, so that its work
does not share the benchmark's GIL:

    .venv/bin/python benchmarks/_proxy.py --upstream http://127.0.0.1:5000 --latency-ms 20

prints the proxy's URL on its first line of output, then serves until killed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "content-length",
}  # fmt: skip


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once; the default 5 drops SYNs


STATS_PATH = "/__proxy_stats"


def make_proxy(upstream: str, latency: float) -> _Server:
    """A proxy server bound to a free port on 127.0.0.1 (not yet serving).

    ``GET /__proxy_stats`` answers ``{"requests": n}`` (requests forwarded so far),
    at once and without forwarding.
    """
    target = urlsplit(upstream)
    lock = threading.Lock()
    done = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream_conn: http.client.HTTPConnection | None = None

        def log_message(self, *args: object) -> None:  # quiet
            return None

        def _body(self) -> bytes | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _send_upstream(self, body: bytes | None) -> http.client.HTTPResponse:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            for attempt in (0, 1):  # a kept-alive connection the upstream closed: reconnect once
                if self.upstream_conn is None:
                    self.upstream_conn = http.client.HTTPConnection(
                        target.hostname or "127.0.0.1", target.port, timeout=120
                    )
                try:
                    self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                    return self.upstream_conn.getresponse()
                except (ConnectionError, http.client.HTTPException):
                    self.upstream_conn.close()
                    self.upstream_conn = None
                    if attempt:
                        raise
            raise AssertionError("unreachable")

        def _stats(self) -> None:
            answer = json.dumps({"requests": done[0]}).encode()
            self.send_response_only(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _handle(self) -> None:
            body = self._body()
            if self.path == STATS_PATH:
                return self._stats()
            with lock:
                done[0] += 1
            time.sleep(latency)
            response = self._send_upstream(body)
            data = response.read()
            self.send_response_only(response.status, response.reason)
            length = str(len(data))
            for key, value in response.getheaders():
                if key.lower() == "content-length" and self.command == "HEAD":
                    length = value  # the object's size; a HEAD answer has no body
                elif key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            if response.will_close and self.upstream_conn is not None:
                self.upstream_conn.close()
                self.upstream_conn = None

        def finish(self) -> None:
            super().finish()
            if self.upstream_conn is not None:
                self.upstream_conn.close()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle  # noqa: N815

    return _Server(("127.0.0.1", 0), Handler)


def start_proxy_process(upstream: str, latency_ms: float) -> tuple[subprocess.Popen, str]:
    """Start the proxy in its own process; returns the process and the proxy's URL."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--upstream", upstream,
         "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the latency proxy did not start (it said {url!r})")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="URL of the S3 server to forward to")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to every request")
    args = parser.parse_args()
    server = make_proxy(args.upstream, args.latency_ms / 1000)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
