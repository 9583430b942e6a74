"""A local stand-in for the Gemini REST API (generativelanguage.googleapis.com), for tests.

It speaks the real wire format of ``POST /v1beta/models/{model}:generateContent``:

* the request: ``{"contents": [{"role", "parts": [{"text"}]}], "systemInstruction": {...},
  "generationConfig": {"temperature", "maxOutputTokens", ...}}`` with the key in the
  ``x-goog-api-key`` header (or ``?key=``);
* a success: ``{"candidates": [{"content": {"parts": [{"text"}], "role": "model"},
  "finishReason": "STOP", "index": 0}], "usageMetadata": {...}, "modelVersion", "responseId"}``;
* a failure: ``{"error": {"code", "message", "status"}}`` with the matching HTTP status.

The application reaches it through the official SDK's base URL option (LAB_GEMINI_BASE_URL).
Tests choose the behaviour (``reply``, ``fail``, ``delay``) and read ``requests`` afterwards.

    with GeminiDouble(api_key="test-key") as gemini:
        gemini.reply("Check the port.")
        settings.LAB_GEMINI_BASE_URL = gemini.url
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

_PATH = re.compile(r"^/(v1beta|v1)/models/([A-Za-z0-9._-]+):generateContent$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}


@dataclass
class RecordedRequest:
    path: str
    model: str
    api_version: str
    api_key: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """All text parts of the user contents, joined."""
        return "\n".join(
            part.get("text", "") for content in self.body.get("contents", []) for part in content.get("parts", [])
        )

    @property
    def system(self) -> str:
        instruction = self.body.get("systemInstruction") or {}
        return "\n".join(part.get("text", "") for part in instruction.get("parts", []))


class GeminiDouble:
    def __init__(self, api_key: str = "test-gemini-key") -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._text = "Try looking at the port your app listens on."
        self._status = 200
        self._message = ""
        self._delay = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gemini-double", daemon=True)

    # ---- what the next requests get -------------------------------------------------------------

    def reply(self, text: str) -> None:
        with self._lock:
            self._text, self._status, self._message, self._delay = text, 200, "", 0.0

    def fail(self, status: int, message: str = "") -> None:
        with self._lock:
            self._status, self._message, self._delay = status, message, 0.0

    def delay(self, seconds: float) -> None:
        """Hold every answer this long (longer than the client's timeout to test timeouts)."""
        with self._lock:
            self._delay = seconds

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> GeminiDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers that are sleeping through a delay
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> GeminiDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the HTTP side -------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                return

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"error": {"code": status, "message": message,
                                              "status": _STATUS_NAMES.get(status, "UNKNOWN")}})

            def do_GET(self) -> None:
                self._error(404, f"Method not found: GET {self.path}")

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                match = _PATH.match(url.path)
                if not match:
                    self._error(404, f"Requested entity was not found: {url.path}")
                    return
                key = self.headers.get("x-goog-api-key") or parse_qs(url.query).get("key", [""])[0]
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._error(400, "Invalid JSON payload received.")
                    return
                with double._lock:
                    double.requests.append(RecordedRequest(
                        path=url.path, api_version=match.group(1), model=match.group(2), api_key=key,
                        body=body if isinstance(body, dict) else {}, headers=dict(self.headers.items()),
                    ))
                    status, text, message, delay = double._status, double._text, double._message, double._delay
                if not key:
                    self._error(403, "Method doesn't allow unregistered callers (callers without established "
                                     "identity). Please use API Key or other form of API consumer identity.")
                    return
                if key != double.api_key:
                    self._error(400, "API key not valid. Please pass a valid API key.")
                    return
                problem = _request_problem(body)
                if problem:
                    self._error(400, problem)
                    return
                if delay and double._stop.wait(delay):
                    return  # shutting down
                if status != 200:
                    self._error(status, message or _MESSAGES.get(status, "Error"))
                    return
                prompt_tokens = max(1, len(json.dumps(body)) // 4)
                answer_tokens = max(1, len(text) // 4)
                self._send(200, {
                    "candidates": [{
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }],
                    "usageMetadata": {
                        "promptTokenCount": prompt_tokens,
                        "candidatesTokenCount": answer_tokens,
                        "totalTokenCount": prompt_tokens + answer_tokens,
                    },
                    "modelVersion": match.group(2),
                    "responseId": uuid.uuid4().hex[:22],
                })

        return Handler


def _request_problem(body: Any) -> str:
    """What the real API would refuse with 400 INVALID_ARGUMENT, for the shapes this double checks."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received. Expected an object."
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for index, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty."
    config = body.get("generationConfig", {})
    if not isinstance(config, dict):
        return "Invalid value at 'generation_config'"
    temperature = config.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 2):
        return "* GenerateContentRequest.generation_config.temperature: must be between 0 and 2"
    tokens = config.get("maxOutputTokens")
    if tokens is not None and (not isinstance(tokens, int) or tokens < 1):
        return "* GenerateContentRequest.generation_config.max_output_tokens: must be positive"
    return ""


@pytest.fixture
def gemini(settings):
    """A running double, wired into the settings as Gemini's base URL and API key."""
    with GeminiDouble() as double:
        settings.LAB_GEMINI_API_KEY = double.api_key
        settings.LAB_GEMINI_BASE_URL = double.url
        settings.LAB_GEMINI_TIMEOUT_SECONDS = 5
        yield double
