"""A plain HTTP destination for exporter-plugin tests: records every request (method, path,
headers, body) and answers as scripted."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import wait_until


class HttpSink:
    def __init__(self, answer=None):
        """`answer(n)` returns (status, headers, body) for request number n (0-based)."""
        self.requests = []
        self.lock = threading.Lock()
        self.answer = answer or (lambda n: (204, {}, b""))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    n = len(outer.requests)
                    outer.requests.append({"method": self.command, "path": self.path, "body": body,
                                           "headers": {k.lower(): v for k, v in self.headers.items()},
                                           "at": time.monotonic()})
                status, headers, response = outer.answer(n)
                self.send_response(status)
                self.send_header("Content-Length", str(len(response)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(response)

            do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_requests(self, count, timeout=10):
        """Waits for at least `count` requests; returns all of them."""
        def arrived():
            with self.lock:
                return len(self.requests) >= count
        wait_until(arrived, f"{count} requests arrived", lambda: f"got {self.requests}", timeout=timeout)
        with self.lock:
            return list(self.requests)

    def gaps(self):
        """Seconds between one request's arrival and the next's."""
        with self.lock:
            times = [r["at"] for r in self.requests]
        return [round(b - a, 3) for a, b in zip(times, times[1:])]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
