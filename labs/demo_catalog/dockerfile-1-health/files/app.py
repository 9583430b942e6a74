"""quotes: a tiny JSON web service built on Python's standard library only.

Routes:
  GET /        what this service is
  GET /quote   the quote of the day

Configuration comes from the environment: PORT (default 8080) and HOST (default 0.0.0.0).
"""

import json
import os
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUOTES = [
    "Simple is better than complex.",
    "Errors should never pass silently.",
    "In the face of ambiguity, refuse the temptation to guess.",
    "Now is better than never.",
    "If the implementation is hard to explain, it's a bad idea.",
]


class Handler(BaseHTTPRequestHandler):
    server_version = "quotes/1.0"

    def do_GET(self) -> None:
        if self.path == "/":
            self._send_json(200, {"service": "quotes", "routes": ["/", "/quote"]})
        elif self.path == "/quote":
            quote = QUOTES[date.today().toordinal() % len(QUOTES)]
            self._send_json(200, {"quote": quote})
        else:
            self._send_json(404, {"error": f"no route for {self.path}"})

    def _send_json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # One line per request on stdout, where `docker logs` looks for it.
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> None:
    # Inside a container the app must listen on every interface, not just loopback.
    host = os.environ.get("HOST", "0.0.0.0")  # noqa: S104
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    print(f"quotes listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
