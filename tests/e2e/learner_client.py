"""A learner's browser, minus the browser: the real pages and endpoints of a running daphne over HTTP.

Signs in through the login form, presses Start on the lab page, saves files through the editor's
JSON endpoints and presses a step's Check button, each with the CSRF token the page would send
(the form field or the X-CSRFToken header, as static/js does for HTMX and the editor).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import requests

from judge.models import Attempt

TOKEN_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
SESSION_URL = re.compile(r"/sessions/([0-9a-f-]{36})/$")


class LearnerClient:
    def __init__(self, server_url: str) -> None:
        self.url = server_url
        self.http = requests.Session()

    def _token_from(self, response: requests.Response) -> str:
        assert response.status_code == 200, (response.status_code, response.url)
        found = TOKEN_FIELD.search(response.text)
        assert found, f"{response.url} has no form with a CSRF token"
        return found.group(1)

    def _ajax_headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.http.cookies["csrftoken"], "Referer": self.url + "/"}

    @property
    def cookie_header(self) -> str:
        """The cookies the browser sends with the terminal's WebSocket."""
        return "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())

    def sign_in(self, username: str, password: str) -> None:
        token = self._token_from(self.http.get(f"{self.url}/accounts/login/", timeout=30))
        response = self.http.post(f"{self.url}/accounts/login/", timeout=30,
                                  data={"csrfmiddlewaretoken": token, "login": username, "password": password},
                                  headers={"Referer": f"{self.url}/accounts/login/"})
        assert response.status_code == 200 and "/accounts/login/" not in response.url, "signing in failed"

    def start_lab(self, slug: str, timeout: float = 300) -> str:
        """Press Start on the lab's page; the server runs the start inline. Returns the session id."""
        token = self._token_from(self.http.get(f"{self.url}/labs/{slug}/", timeout=30))
        response = self.http.post(f"{self.url}/labs/{slug}/start/", data={"csrfmiddlewaretoken": token},
                                  headers={"Referer": f"{self.url}/labs/{slug}/"}, timeout=timeout)
        assert response.status_code == 200, response.status_code
        found = SESSION_URL.search(response.url)
        assert found, f"Start led to {response.url}, not a session page"
        return found.group(1)

    def session_page(self, session_id: str) -> str:
        response = self.http.get(f"{self.url}/sessions/{session_id}/", timeout=30)
        assert response.status_code == 200, response.status_code
        return response.text

    def stop_session(self, session_id: str) -> None:
        """Press Stop session on the session page."""
        token = self._token_from(self.http.get(f"{self.url}/sessions/{session_id}/", timeout=30))
        response = self.http.post(f"{self.url}/sessions/{session_id}/stop/", data={"csrfmiddlewaretoken": token},
                                  headers={"Referer": f"{self.url}/sessions/{session_id}/"}, timeout=120)
        assert response.status_code == 200, response.status_code

    # ---- the editor ------------------------------------------------------------------------------
    def open_file(self, session_id: str, path: str) -> tuple[str, str] | None:
        """The file's text and version, or None when there is no such file."""
        response = self.http.get(f"{self.url}/sessions/{session_id}/files/open/", params={"path": path}, timeout=60)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, (response.status_code, response.text)
        data = response.json()
        return data["content"], data["version"]

    def create_file(self, session_id: str, path: str) -> str:
        """The editor's New file: an empty file; returns its version."""
        response = self.http.post(f"{self.url}/sessions/{session_id}/files/create/", timeout=60,
                                  json={"path": path, "kind": "file"}, headers=self._ajax_headers())
        assert response.status_code == 201, f"creating {path} failed: {response.status_code} {response.text}"
        return str(response.json()["version"])

    def edit_file(self, session_id: str, path: str, change: Callable[[str], str]) -> str:
        """Open `path` in the editor (New file when it does not exist), change its text, save it.
        Returns what was saved."""
        opened = self.open_file(session_id, path)
        text, version = opened if opened is not None else ("", self.create_file(session_id, path))
        changed = change(text)
        self.save_file(session_id, path, changed, version)
        return changed

    def save_file(self, session_id: str, path: str, content: str, version: str) -> None:
        response = self.http.post(f"{self.url}/sessions/{session_id}/files/save/", timeout=60,
                                  json={"path": path, "content": content, "version": version},
                                  headers=self._ajax_headers())
        assert response.status_code == 200, f"saving {path} failed: {response.status_code} {response.text}"

    # ---- the judge -------------------------------------------------------------------------------
    def check_step(self, session_id: str, step_id: int, timeout: float = 600) -> tuple[str, Attempt | None]:
        """Press the step's Check button (HTMX, as the page does) and wait for the verdict.

        Returns the box the page swaps in and the attempt it made (None when it made none)."""
        return self._check(session_id, f"steps/{step_id}/check/", timeout)

    def check_final(self, session_id: str, timeout: float = 600) -> tuple[str, Attempt | None]:
        """Press Run the final check."""
        return self._check(session_id, "final/check/", timeout)

    def _check(self, session_id: str, path: str, timeout: float) -> tuple[str, Attempt | None]:
        before = set(Attempt.objects.filter(session_id=session_id).values_list("pk", flat=True))
        response = self.http.post(f"{self.url}/sessions/{session_id}/judge/{path}",
                                  headers={**self._ajax_headers(), "HX-Request": "true"}, timeout=timeout)
        assert response.status_code == 200, (response.status_code, response.text[:2000])
        made = Attempt.objects.filter(session_id=session_id).exclude(pk__in=before).order_by("pk").last()
        if made is None:
            return response.text, None
        return response.text, self._finished(session_id, made, timeout)

    def _finished(self, session_id: str, attempt: Attempt, timeout: float) -> Attempt:
        """Poll the attempt's box as the page does until the judge is done with it."""
        deadline = time.monotonic() + timeout
        while attempt.status in (Attempt.Status.QUEUED, Attempt.Status.RUNNING):
            assert time.monotonic() < deadline, f"the check was still {attempt.status} after {timeout:g} s"
            time.sleep(1)
            response = self.http.get(f"{self.url}/sessions/{session_id}/judge/attempts/{attempt.pk}/?poll=1",
                                     headers={"HX-Request": "true"}, timeout=30)
            assert response.status_code == 200, response.status_code
            attempt.refresh_from_db()
        return attempt


def verdict(attempt: Attempt) -> dict[str, Any]:
    """What an assertion message needs to say about an attempt."""
    return {"status": attempt.status, "passed": attempt.passed, "failures": (attempt.result or {}).get("failures"),
            "error": (attempt.result or {}).get("error"), "log": (attempt.log or "")[-1500:]}
