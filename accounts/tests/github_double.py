"""A stand-in for GitHub (Enterprise layout) that speaks GitHub's OAuth and REST wire format over real HTTP.

It serves, on 127.0.0.1 and a random port:

* ``GET  /login/oauth/authorize``    - the consent page; approves (or denies) for the user "signed in"
                                       and redirects to the callback with ``code`` and ``state``;
* ``POST /login/oauth/access_token`` - exchanges a code; form-encoded reply unless ``Accept: application/json``;
                                       errors come back as 200 with an ``error`` field, as on github.com;
* ``GET  /api/v3/user``              - the authenticated user;
* ``GET  /api/v3/user/emails``       - their addresses (404 without the ``user:email`` or ``user`` scope).

Documented GitHub behaviour is followed (error names, descriptions, status codes, single-use codes
that expire after ten minutes, comma-separated granted scopes). It is stricter than GitHub in two
places, so that mistakes on our side show up: ``state`` is required, and unknown scopes are refused.
Every request is recorded (with the reply's status) for tests to inspect.
"""

from __future__ import annotations

import json
import secrets
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

CODE_LIFETIME_SECONDS = 600
KNOWN_SCOPES = frozenset({
    "repo", "repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events",
    "admin:repo_hook", "write:repo_hook", "read:repo_hook", "admin:org", "write:org", "read:org",
    "admin:public_key", "write:public_key", "read:public_key", "admin:org_hook", "gist", "notifications",
    "user", "read:user", "user:email", "user:follow", "project", "read:project", "delete_repo",
    "write:packages", "read:packages", "delete:packages", "admin:gpg_key", "write:gpg_key", "read:gpg_key",
    "codespace", "workflow",
})
DOCS = "https://docs.github.com"
TOKEN_ERRORS = {
    "incorrect_client_credentials": (
        "The client_id and/or client_secret passed are incorrect.",
        f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
        "#incorrect-client-credentials",
    ),
    "redirect_uri_mismatch": (
        "The redirect_uri MUST match the registered callback URL for this application.",
        f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
        "#redirect-uri-mismatch2",
    ),
    "bad_verification_code": (
        "The code passed is incorrect or expired.",
        f"{DOCS}/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
        "#bad-verification-code",
    ),
}
_BASE62 = string.ascii_letters + string.digits


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class OAuthApp:
    client_id: str
    client_secret: str
    callback_url: str


@dataclass
class GitHubUser:
    id: int
    login: str
    name: str | None = None
    public_email: str | None = None  # what /user shows; None when the user keeps their address private
    emails: list[dict[str, Any]] = field(default_factory=list)

    def profile(self, web_url: str, api_url: str) -> dict[str, Any]:
        """The /user payload, shaped like GitHub's."""
        user_api = f"{api_url}/users/{self.login}"
        return {
            "login": self.login,
            "id": self.id,
            "node_id": f"MDQ6VXNlcj{self.id}",
            "avatar_url": f"{web_url}/avatars/u/{self.id}?v=4",
            "gravatar_id": "",
            "url": user_api,
            "html_url": f"{web_url}/{self.login}",
            "followers_url": f"{user_api}/followers",
            "following_url": f"{user_api}/following{{/other_user}}",
            "gists_url": f"{user_api}/gists{{/gist_id}}",
            "starred_url": f"{user_api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{user_api}/subscriptions",
            "organizations_url": f"{user_api}/orgs",
            "repos_url": f"{user_api}/repos",
            "events_url": f"{user_api}/events{{/privacy}}",
            "received_events_url": f"{user_api}/received_events",
            "type": "User",
            "user_view_type": "public",
            "site_admin": False,
            "name": self.name,
            "company": None,
            "blog": "",
            "location": None,
            "email": self.public_email,
            "hireable": None,
            "bio": None,
            "twitter_username": None,
            "notification_email": None,
            "public_repos": 3,
            "public_gists": 0,
            "followers": 1,
            "following": 0,
            "created_at": "2015-03-14T09:26:53Z",
            "updated_at": "2025-01-02T10:00:00Z",
        }


@dataclass
class Grant:
    """An authorization: first as a code, then as the token it was exchanged for."""

    app: OAuthApp
    user: GitHubUser
    scopes: tuple[str, ...]
    redirect_uri: str | None
    issued_at: float = field(default_factory=time.monotonic)
    used: bool = False


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    form: dict[str, list[str]]
    status: int = 0
    reply: Any = None  # the decoded reply (dict, list or str)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def param(self, name: str) -> str | None:
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else None


class GitHubDouble:
    """The fake GitHub: register apps and users, choose who is signed in, then point a client at `url`."""

    def __init__(self) -> None:
        self.apps: dict[str, OAuthApp] = {}
        self.users: dict[int, GitHubUser] = {}
        self.signed_in: GitHubUser | None = None  # who is logged in to GitHub in "the browser"
        self.deny = False  # the signed-in user clicks Cancel on the consent page
        self.requests: list[RecordedRequest] = []
        self._codes: dict[str, Grant] = {}
        self._tokens: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GitHubDouble:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.double = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="github-double", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the GitHub double is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v3"

    # -- set-up ----------------------------------------------------------------------------------

    def register_app(self, callback_url: str, client_id: str | None = None,
                     client_secret: str | None = None) -> OAuthApp:
        app = OAuthApp(
            client_id=client_id or "Iv1." + _random("0123456789abcdef", 16),
            client_secret=client_secret or _random("0123456789abcdef", 40),
            callback_url=callback_url,
        )
        self.apps[app.client_id] = app
        return app

    def add_user(self, login: str, *, id: int, name: str | None = None, public_email: str | None = None,
                 emails: list[dict[str, Any]] | None = None) -> GitHubUser:
        user = GitHubUser(id=id, login=login, name=name, public_email=public_email, emails=list(emails or []))
        self.users[user.id] = user
        return user

    def issue_token(self, user: GitHubUser, scopes: tuple[str, ...] = ("read:user", "user:email"),
                    app: OAuthApp | None = None) -> str:
        """A token as if the user had gone through the flow (for testing the API directly)."""
        app = app or next(iter(self.apps.values()))
        token = "gho_" + _random(_BASE62, 36)
        with self._lock:
            self._tokens[token] = Grant(app=app, user=user, scopes=scopes, redirect_uri=None, used=True)
        return token

    # -- inspection ------------------------------------------------------------------------------

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method)]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- protocol --------------------------------------------------------------------------------

    def authorize(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
        """GET /login/oauth/authorize: returns (status, headers, body)."""

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        app = self.apps.get(one("client_id") or "")
        if app is None:
            return HTTPStatus.NOT_FOUND, {"Content-Type": "text/html; charset=utf-8"}, "<h1>Not Found</h1>"
        state = one("state")
        redirect_uri = one("redirect_uri")
        if redirect_uri is not None and not _redirect_allowed(app.callback_url, redirect_uri):
            return _redirect(app.callback_url, {
                "error": "redirect_uri_mismatch",
                "error_description": "The redirect_uri MUST match the registered callback URL for this application.",
                "error_uri": f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
                             "#redirect-uri-mismatch",
                "state": state,
            })
        if not state:
            return HTTPStatus.BAD_REQUEST, {"Content-Type": "text/plain"}, "state is required (GitHub double)"
        scopes = tuple(s for s in (one("scope") or "").replace(",", " ").split() if s)
        unknown = sorted(set(scopes) - KNOWN_SCOPES)
        if unknown:
            return HTTPStatus.BAD_REQUEST, {"Content-Type": "text/plain"}, f"unknown scope(s): {', '.join(unknown)}"
        target = redirect_uri or app.callback_url
        if self.signed_in is None:
            return HTTPStatus.OK, {"Content-Type": "text/html; charset=utf-8"}, "<h1>Sign in to GitHub</h1>"
        if self.deny:
            return _redirect(target, {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
                             "#access-denied",
                "state": state,
            })
        code = _random("0123456789abcdef", 20)
        with self._lock:
            self._codes[code] = Grant(app=app, user=self.signed_in, scopes=tuple(dict.fromkeys(scopes)),
                                      redirect_uri=redirect_uri)
        return _redirect(target, {"code": code, "state": state})

    def access_token(self, params: dict[str, list[str]], accept: str) -> tuple[int, dict[str, str], Any]:
        """POST /login/oauth/access_token."""

        def one(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        app = self.apps.get(one("client_id") or "")
        reply: dict[str, str]
        if app is None or not secrets.compare_digest(app.client_secret, one("client_secret") or ""):
            reply = _token_error("incorrect_client_credentials")
        else:
            with self._lock:
                grant = self._codes.get(one("code") or "")
                usable = (
                    grant is not None
                    and grant.app is app
                    and not grant.used
                    and time.monotonic() - grant.issued_at < CODE_LIFETIME_SECONDS
                )
                redirect_uri = one("redirect_uri")
                if not usable or grant is None:
                    reply = _token_error("bad_verification_code")
                elif redirect_uri is not None and redirect_uri != (grant.redirect_uri or app.callback_url):
                    reply = _token_error("redirect_uri_mismatch")
                else:
                    grant.used = True
                    token = "gho_" + _random(_BASE62, 36)
                    self._tokens[token] = grant
                    reply = {"access_token": token, "token_type": "bearer", "scope": ",".join(grant.scopes)}
        if "application/json" in accept:
            return HTTPStatus.OK, {"Content-Type": "application/json; charset=utf-8"}, reply
        return HTTPStatus.OK, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, urlencode(reply)

    def api(self, path: str, authorization: str) -> tuple[int, dict[str, str], Any]:
        """GET /api/v3/user and /api/v3/user/emails."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-GitHub-Media-Type": "github.v3; format=json",
        }
        if path not in ("/api/v3/user", "/api/v3/user/emails"):
            return HTTPStatus.NOT_FOUND, headers, {
                "message": "Not Found", "documentation_url": f"{DOCS}/rest", "status": "404",
            }
        scheme, _, credential = authorization.partition(" ")
        if not authorization:
            return HTTPStatus.UNAUTHORIZED, headers, {
                "message": "Requires authentication",
                "documentation_url": f"{DOCS}/rest/users/users#get-the-authenticated-user",
                "status": "401",
            }
        with self._lock:
            grant = self._tokens.get(credential.strip()) if scheme.lower() in ("token", "bearer") else None
        if grant is None:
            return HTTPStatus.UNAUTHORIZED, headers, {
                "message": "Bad credentials", "documentation_url": f"{DOCS}/rest", "status": "401",
            }
        headers["X-OAuth-Scopes"] = ", ".join(grant.scopes)
        if path == "/api/v3/user":
            headers["X-Accepted-OAuth-Scopes"] = ""
            return HTTPStatus.OK, headers, grant.user.profile(self.url, self.api_url)
        headers["X-Accepted-OAuth-Scopes"] = "user, user:email"
        if not {"user", "user:email"} & set(grant.scopes):
            return HTTPStatus.NOT_FOUND, headers, {
                "message": "Not Found",
                "documentation_url": f"{DOCS}/rest/users/emails#list-email-addresses-for-the-authenticated-user",
                "status": "404",
            }
        return HTTPStatus.OK, headers, [dict(e) for e in grant.user.emails]


def _token_error(error: str) -> dict[str, str]:
    description, uri = TOKEN_ERRORS[error]
    return {"error": error, "error_description": description, "error_uri": uri}


def _redirect(url: str, params: dict[str, str | None]) -> tuple[int, dict[str, str], str]:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({k: v for k, v in params.items() if v is not None})) if q)
    return HTTPStatus.FOUND, {"Location": urlunsplit(parts._replace(query=query))}, ""


def _redirect_allowed(registered: str, given: str) -> bool:
    """GitHub's rule: same scheme, host and port; the path may extend the registered one."""
    reg, got = urlsplit(registered), urlsplit(given)
    if (reg.scheme, reg.hostname, reg.port) != (got.scheme, got.hostname, got.port):
        return False
    base = reg.path.rstrip("/")
    return got.path == reg.path or got.path == base or got.path.startswith(base + "/")


class _Handler(BaseHTTPRequestHandler):
    server_version = "GitHub.com"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    @property
    def double(self) -> GitHubDouble:
        return self.server.double  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; requests are recorded instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        headers = {name.lower(): value for name, value in self.headers.items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        form: dict[str, list[str]] = {}
        if body and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode(), keep_blank_values=True)
        record = RecordedRequest(method=method, path=parts.path, query=query, headers=headers, form=form)

        if parts.path == "/login/oauth/authorize" and method == "GET":
            status, reply_headers, reply = self.double.authorize(query)
        elif parts.path == "/login/oauth/access_token" and method == "POST":
            status, reply_headers, reply = self.double.access_token({**query, **form}, headers.get("accept", ""))
        elif parts.path.startswith("/api/v3/") and method == "GET":
            status, reply_headers, reply = self.double.api(parts.path, headers.get("authorization", ""))
        else:
            status, reply_headers, reply = HTTPStatus.NOT_FOUND, {"Content-Type": "text/plain"}, "Not Found"

        record.status = int(status)
        record.reply = reply
        self.double._record(record)
        payload = (json.dumps(reply) if isinstance(reply, dict | list) else str(reply)).encode()
        self.send_response(status)
        for name, value in reply_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def running() -> Iterator[GitHubDouble]:
    """Generator for a pytest fixture: a started double, stopped afterwards."""
    with GitHubDouble() as double:
        yield double
