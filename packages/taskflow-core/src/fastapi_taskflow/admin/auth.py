"""Built-in username/password login for the admin routes: signed, expiring session cookies.

``BasicLogin`` is itself a FastAPI dependency: :class:`~fastapi_taskflow.admin.TaskAdmin`
puts it on every admin route. A request passes with a valid session cookie (set by the
login form) or with an HTTP ``Authorization: Basic`` header (for scripts and Prometheus).
The cookie is signed with ``secret`` by itsdangerous and carries its issue time, so it
expires after ``max_age`` seconds and several instances sharing ``secret`` accept each
other's sessions. Credentials are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import posixpath
import secrets
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, quote, unquote

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from ..clock import Clock, SystemClock
from ..errors import TaskflowError

__all__ = ["MIN_SECRET_LENGTH", "SESSION_COOKIE", "AdminAuthError", "BasicLogin"]

SESSION_COOKIE: Final = "taskflow_session"
"""The name of the session cookie."""

_SALT: Final = "fastapi-taskflow-admin-session"
_MAX_FORM_BYTES: Final = 8192
_LOGIN_HEADERS: Final = {
    # The form cannot be framed (clickjacking), runs no script, and posts only here;
    # its one inline style block is all it loads. No Referer leaks its ``next=`` page.
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            "style-src 'unsafe-inline'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


MIN_SECRET_LENGTH = 16
"""The fewest characters (or bytes) ``BasicLogin`` takes for a ``secret``: the cookie's
signature is only as hard to forge as its key is to guess."""


class AdminAuthError(TaskflowError, ValueError):
    """``BasicLogin`` was configured with an empty username, password or secret."""


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of two strings (as UTF-8 bytes)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class BasicLogin:
    """Username and password login with a signed, expiring session cookie.

    Pass it as ``TaskAdmin(..., auth=BasicLogin(...))``: every admin route then needs a
    session (the dashboard redirects to ``{path}/login``; the API answers 401), or an
    HTTP Basic ``Authorization`` header with the same credentials.

    Args:
        username: the login name.
        password: the password (compared in constant time, never logged).
        secret: the key that signs session cookies. Give every instance the same secret
            so a session works on all of them; changing it logs everyone out. When None a
            random one is made (sessions then end with the process).
        max_age: seconds a session lasts after login.
        clock: the time source for issuing and expiring sessions (tests inject one).

    Raises:
        AdminAuthError: an empty username, password or secret (or one that is not
            text), a secret shorter than :data:`MIN_SECRET_LENGTH`, or ``max_age`` not
            a whole number of seconds of at least 1.
    """

    def __init__(
        self,
        *,
        username: str,
        password: str,
        secret: str | bytes | None = None,
        max_age: int = 12 * 3600,
        clock: Clock | None = None,
    ) -> None:
        if (
            not isinstance(username, str)
            or not isinstance(password, str)
            or not username
            or not password
        ):
            raise AdminAuthError(
                "BasicLogin needs a non-empty username and password (strings), for example "
                "BasicLogin(username='admin', password=os.environ['TASKFLOW_ADMIN_PASSWORD'])"
            )
        if secret is not None and (not isinstance(secret, str | bytes) or not secret):
            raise AdminAuthError(
                "BasicLogin secret must be a non-empty string (or bytes): pass a long random "
                "one shared by every instance (e.g. secrets.token_urlsafe(32)), or None for "
                "a random one"
            )
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            raise AdminAuthError(
                f"BasicLogin secret is {len(secret)} characters long, fewer than "
                f"{MIN_SECRET_LENGTH}: a short key lets a session cookie be forged by "
                "guessing it. Pass a long random one shared by every instance (e.g. "
                "secrets.token_urlsafe(32)), or None for a random one"
            )
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 1:
            raise AdminAuthError(
                f"BasicLogin max_age must be a whole number of seconds, at least 1, got {max_age!r}"
            )
        self.username = username
        self._password = password
        self.max_age = max_age
        self._clock = clock or SystemClock()
        self._serializer = URLSafeTimedSerializer(
            secret if secret is not None else secrets.token_urlsafe(32),
            salt=_SALT,
            signer=self._signer_class(),
        )
        self._path = ""
        # Each admin route's endpoint -> how many path segments the route adds to the
        # admin's own address (see _base and watch).
        self._depths: dict[Callable[..., Any], int] = {}

    def __repr__(self) -> str:
        return f"BasicLogin(username={self.username!r}, max_age={self.max_age})"

    def _signer_class(self) -> type[TimestampSigner]:
        clock = self._clock

        class ClockSigner(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock.now().timestamp())

        return ClockSigner

    # -- checking ---------------------------------------------------------------------

    def check_credentials(self, username: str, password: str) -> bool:
        """True when both match; both are always compared (constant time)."""
        user_ok = _same(username, self.username)
        password_ok = _same(password, self._password)
        return user_ok and password_ok

    def issue(self) -> str:
        """Return a new signed session token for the configured user."""
        return str(self._serializer.dumps({"u": self.username}))

    def session_user(self, token: str | None) -> str | None:
        """The user of a valid, unexpired session token; None for anything else."""
        if not token:
            return None
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except BadSignature:  # includes SignatureExpired
            return None
        user = data.get("u") if isinstance(data, dict) else None
        if isinstance(user, str) and _same(user, self.username):
            return user
        return None

    def _basic_user(self, header: str | None) -> str | None:
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = raw.partition(":")
        if sep and self.check_credentials(username, password):
            return username
        return None

    async def __call__(self, request: Request) -> str:
        """The dependency: return the user, or refuse (401, or 303 to the login page)."""
        user = self.session_user(request.cookies.get(SESSION_COOKIE))
        if user is None:
            user = self._basic_user(request.headers.get("authorization"))
        if user is not None:
            return user
        base = self._base(request)
        if _wants_page(request):
            here = _browser_path(request)
            if request.url.query:
                here += "?" + request.url.query
            # (relative when used on an app's own route without TaskAdmin, as before)
            login = f"{base}/login" if base else "login"
            login += "?next=" + quote(here, safe="/")
            raise HTTPException(status.HTTP_303_SEE_OTHER, "login required", {"Location": login})
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"login required: sign in at {base}/login"
        )

    def _base(self, request: Request) -> str:
        """Where the admin is, as the browser sees it: a proxy's prefix (the server's
        ``root_path``), any prefix the admin router was included under, and its path.

        Found from the address the request came in on, less the part the matched admin
        route adds (``/dashboard``, ``/api/tasks/{task_id}``, ...); a route that is not
        the admin's (the dependency used on an app's own route) falls back to the
        configured path after ``root_path``.
        """
        root = str(request.scope.get("root_path") or "").rstrip("/")
        route = request.scope.get("route")
        endpoint = getattr(route, "endpoint", None) or request.scope.get("endpoint")
        depth = self._depths.get(endpoint) if callable(endpoint) else None
        if depth is not None:
            parts = _browser_path(request).split("/")
            if len(parts) > depth + 1:
                return "/".join(parts[: len(parts) - depth])
        return root + self._path

    # -- routes -----------------------------------------------------------------------

    def watch(self, *routers: APIRouter) -> None:
        """Note the admin's own routes: ``routers`` hold them with paths relative to the
        admin path (``/dashboard``, ``/api/tasks``, ``/login``).

        :class:`~fastapi_taskflow.admin.TaskAdmin` calls it as it builds its router.
        Wherever that router is then included (``include_router(..., prefix="/ops")``,
        an app served with ``root_path`` behind a proxy), the login redirects, the
        allowed ``next=`` pages and the session cookie's path follow the address a
        request came in on.
        """
        for router in routers:
            for route in router.routes:
                endpoint = getattr(route, "endpoint", None)
                own = getattr(route, "path", None)
                if callable(endpoint) and isinstance(own, str) and own.startswith("/"):
                    self._depths[endpoint] = own.count("/")

    def routes(self, router: APIRouter, *, path: str, title: str) -> None:
        """Add ``GET/POST /login`` and ``POST /logout`` to the (unguarded) ``router``."""
        self._path = path

        @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
        async def login_form(request: Request) -> HTMLResponse:
            page = _login_page(title, request.query_params.get("next", ""), "")
            return HTMLResponse(page, headers=_LOGIN_HEADERS)

        @router.post("/login", include_in_schema=False)
        async def login_submit(request: Request) -> Response:
            body = await _read_form(request)
            if body is None:
                page = _login_page(title, "", "Request too large.")
                return HTMLResponse(page, 413, headers=_LOGIN_HEADERS)
            base = self._base(request)
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            username = form.get("username", [""])[0]
            password = form.get("password", [""])[0]
            target = _safe_next(form.get("next", [""])[0], base)
            if not self.check_credentials(username, password):
                page = _login_page(title, target, "Wrong username or password.")
                return HTMLResponse(page, status.HTTP_401_UNAUTHORIZED, headers=_LOGIN_HEADERS)
            response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
            response.set_cookie(
                SESSION_COOKIE,
                self.issue(),
                max_age=self.max_age,
                path=base or "/",
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
            )
            return response

        @router.post("/logout", include_in_schema=False)
        async def logout(request: Request) -> Response:
            base = self._base(request)
            response = RedirectResponse(f"{base}/login", status.HTTP_303_SEE_OTHER)
            response.delete_cookie(SESSION_COOKIE, path=base or "/")
            return response


async def _read_form(request: Request) -> bytes | None:
    """The login form's body, or None once it is larger than the form can be.

    A ``Content-Length`` above the limit is refused before reading anything; otherwise
    the body is read piece by piece and reading stops as soon as the limit is passed, so
    a client cannot make the (unauthenticated) login hold a large body in memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > _MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    return bytes(body)


def _browser_path(request: Request) -> str:
    """The request's path as the browser sent it: ``root_path`` included once."""
    scope = request.scope
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path") or "").rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path
    return root + path


def _wants_page(request: Request) -> bool:
    """A browser navigating to a page (not the API, the stream or metrics)."""
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _safe_next(target: str, base: str) -> str:
    """Only redirect to a page under the admin's ``base`` (never to another site, nor,
    through ``..`` or its percent-encoded form, elsewhere on this one).

    The query string is kept (a filtered dashboard link stays filtered).
    """
    default = f"{base}/dashboard"
    if target.startswith("//") or any(ch in target for ch in "\\\r\n"):
        return default
    end = min((i for i in (target.find("?"), target.find("#")) if i >= 0), default=len(target))
    path = unquote(target[:end])
    if any(ch in path for ch in "\\\r\n\x00") or ".." in path.split("/"):
        return default
    if posixpath.normpath(path) != path.rstrip("/") or not path.startswith(base + "/"):
        return default
    return target


def _login_page(title: str, next_url: str, message: str) -> str:
    esc = html.escape
    note = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · sign in</title>
<style>
:root {{ color-scheme: light dark; font-family: system-ui, sans-serif; }}
body {{ display: grid; place-items: center; min-height: 100vh; margin: 0; }}
form {{ display: grid; gap: .75rem; min-width: 18rem; padding: 2rem;
        border: 1px solid color-mix(in srgb, currentColor 20%, transparent); border-radius: 8px; }}
input, button {{ font: inherit; padding: .5rem; }}
.error {{ color: #d33; margin: 0; }}
</style></head>
<body><form method="post" action="login">
<h1>{esc(title)}</h1>{note}
<label>Username <input name="username" autocomplete="username" required autofocus></label>
<label>Password
<input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{esc(next_url, quote=True)}">
<button type="submit">Sign in</button>
</form></body></html>"""
