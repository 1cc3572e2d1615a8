"""Auth guards every admin route: API, dashboard, assets, event stream and metrics."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from fastapi_taskflow import TaskManager
from fastapi_taskflow.admin import SESSION_COOKIE, AdminAuthError, BasicLogin, TaskAdmin
from fastapi_taskflow.clock import ManualClock

pytestmark = pytest.mark.anyio

SECRET = "correct horse battery staple"

# Every admin route (method, path under /tasks). The test below checks that this list
# covers every route the OpenAPI schema shows, so a new route cannot skip the check.
ROUTES = [
    ("GET", "/api/tasks"),
    ("GET", "/api/tasks/some-id"),
    ("GET", "/api/tasks/some-id/logs"),
    ("GET", "/api/tasks/some-id/attempts"),
    ("GET", "/api/stats"),
    ("GET", "/api/events"),
    ("POST", "/api/tasks/retry-failed"),
    ("POST", "/api/tasks/some-id/retry"),
    ("POST", "/api/tasks/some-id/cancel"),
    ("POST", "/api/purge"),
    ("GET", "/metrics"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/static/api.js"),
]
BODIES = {"/api/tasks/retry-failed": {}, "/api/purge": {"older_than_seconds": 0}}


def _schema_routes(app: FastAPI) -> set[tuple[str, str]]:
    found = set()
    for path, ops in app.openapi()["paths"].items():
        if path.startswith("/tasks/"):
            for method in ops:
                found.add((method.upper(), path.removeprefix("/tasks")))
    return found


def _normalise(path: str) -> str:
    return path.replace("some-id", "{task_id}")


def test_route_table_covers_the_schema() -> None:
    app = FastAPI()
    TaskAdmin(app, TaskManager(), auth=_deny)
    listed = {(m, _normalise(p)) for m, p in ROUTES}
    assert _schema_routes(app) <= listed


async def _deny(request: Request) -> None:
    if request.headers.get("x-token") != "let-me-in":
        raise HTTPException(status_code=401, detail="token required")


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _call(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    body = BODIES.get(path)
    if path == "/api/events":
        async with client.stream(method, "/tasks" + path, **kw) as response:
            if response.status_code != 200:
                await response.aread()  # a refusal is a short, complete answer
            return response  # an accepted stream is never read here (it never ends)
    return await client.request(method, "/tasks" + path, json=body, **kw)


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def login_app(clock: ManualClock) -> AsyncIterator[tuple[FastAPI, BasicLogin]]:
    tm = TaskManager(clock=clock)
    auth = BasicLogin(username="admin", password="s3cret", secret=SECRET, max_age=600, clock=clock)
    app = FastAPI()
    TaskAdmin(app, tm, auth=auth)
    async with tm:
        yield app, auth


@pytest.mark.parametrize("method, path", ROUTES)
async def test_dependency_auth_guards_every_route(method: str, path: str) -> None:
    """Any FastAPI dependency guards every admin route, the stream and metrics too."""
    tm = TaskManager()
    app = FastAPI()
    TaskAdmin(app, tm, auth=_deny)
    async with tm, _client(app) as client:
        refused = await _call(client, method, path)
        assert refused.status_code == 401
        if path != "/api/events":
            allowed = await _call(client, method, path, headers={"x-token": "let-me-in"})
            assert allowed.status_code in (200, 404), allowed.text


@pytest.mark.parametrize("method, path", ROUTES)
async def test_basic_login_guards_every_route(
    login_app: tuple[FastAPI, BasicLogin], method: str, path: str
) -> None:
    """Without a session every route refuses; a browser page redirects to the login."""
    app, auth = login_app
    async with _client(app) as client:
        refused = await _call(client, method, path)
        assert refused.status_code == 401
        assert "s3cret" not in refused.text
        client.cookies.set(SESSION_COOKIE, auth.issue())
        if path != "/api/events":
            allowed = await _call(client, method, path)
            assert allowed.status_code in (200, 404), allowed.text


async def test_login_flow_and_redirects(login_app: tuple[FastAPI, BasicLogin]) -> None:
    app, _ = login_app
    async with _client(app) as client:
        page = await client.get("/tasks/dashboard", headers={"accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/tasks/login?next=/tasks/dashboard"
        form = await client.get("/tasks/login")
        assert form.status_code == 200 and 'name="password"' in form.text
        wrong = await client.post(
            "/tasks/login", data={"username": "admin", "password": "nope", "next": "/tasks/x"}
        )
        assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies
        ok = await client.post(
            "/tasks/login",
            data={"username": "admin", "password": "s3cret", "next": "/tasks/dashboard"},
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/tasks/dashboard"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/tasks" in cookie
        assert (await client.get("/tasks/api/tasks")).status_code == 200
        out = await client.post("/tasks/logout")
        assert out.status_code == 303
        assert (await client.get("/tasks/api/tasks")).status_code == 401


async def test_the_login_page_cannot_be_framed(login_app: tuple[FastAPI, BasicLogin]) -> None:
    """The sign-in form (GET, and its answer to a wrong password) is never shown inside
    another site's frame, runs no script and is not cached."""
    app, _ = login_app
    async with _client(app) as client:
        form = await client.get("/tasks/login?next=/tasks/dashboard")
        wrong = await client.post("/tasks/login", data={"username": "admin", "password": "x"})
    for answer in (form, wrong):
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "script-src" not in policy  # falls back to default-src 'none'
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/elsewhere"])
async def test_login_never_redirects_off_the_admin(
    login_app: tuple[FastAPI, BasicLogin], target: str
) -> None:
    app, _ = login_app
    async with _client(app) as client:
        ok = await client.post(
            "/tasks/login", data={"username": "admin", "password": "s3cret", "next": target}
        )
        assert ok.headers["location"] == "/tasks/dashboard"


async def test_expired_session_is_refused(
    login_app: tuple[FastAPI, BasicLogin], clock: ManualClock
) -> None:
    app, auth = login_app
    token = auth.issue()
    async with _client(app) as client:
        client.cookies.set(SESSION_COOKIE, token)
        clock.advance(599)
        assert (await client.get("/tasks/api/tasks")).status_code == 200
        clock.advance(2)
        assert (await client.get("/tasks/api/tasks")).status_code == 401
        assert (await client.get("/tasks/metrics")).status_code == 401


@pytest.mark.parametrize("how", ["flip-signature", "other-secret", "other-user", "garbage"])
async def test_tampered_session_is_refused(
    login_app: tuple[FastAPI, BasicLogin], clock: ManualClock, how: str
) -> None:
    app, auth = login_app
    token = auth.issue()
    if how == "flip-signature":
        token = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif how == "other-secret":
        token = BasicLogin(
            username="admin", password="s3cret", secret="another long secret", clock=clock
        ).issue()
    elif how == "other-user":
        token = BasicLogin(username="root", password="x", secret=SECRET, clock=clock).issue()
    else:
        token = "not-a-session"
    async with _client(app) as client:
        client.cookies.set(SESSION_COOKIE, token)
        assert (await client.get("/tasks/api/tasks")).status_code == 401


async def test_sessions_work_across_instances_sharing_the_secret(clock: ManualClock) -> None:
    """Two apps (instances) with one secret accept each other's sessions."""
    apps = []
    for _ in range(2):
        app = FastAPI()
        TaskAdmin(
            app,
            TaskManager(clock=clock),
            auth=BasicLogin(username="admin", password="pw", secret=SECRET, clock=clock),
        )
        apps.append(app)
    async with _client(apps[0]) as first, _client(apps[1]) as second:
        ok = await first.post("/tasks/login", data={"username": "admin", "password": "pw"})
        second.cookies.set(SESSION_COOKIE, ok.cookies[SESSION_COOKIE])
        assert (await second.get("/tasks/api/stats")).status_code == 200


async def test_http_basic_header_for_scripts(login_app: tuple[FastAPI, BasicLogin]) -> None:
    app, _ = login_app

    def header(user: str, password: str) -> dict[str, str]:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"authorization": f"Basic {raw}"}

    async with _client(app) as client:
        assert (
            await client.get("/tasks/metrics", headers=header("admin", "s3cret"))
        ).status_code == 200
        assert (
            await client.get("/tasks/metrics", headers=header("admin", "bad"))
        ).status_code == 401
        bad = {"authorization": "Basic %%%"}
        assert (await client.get("/tasks/metrics", headers=bad)).status_code == 401


def test_basic_login_validates_its_settings() -> None:
    with pytest.raises(AdminAuthError, match="username and password"):
        BasicLogin(username="", password="x")
    with pytest.raises(AdminAuthError, match="secret"):
        BasicLogin(username="a", password="x", secret="")
    with pytest.raises(AdminAuthError, match="max_age"):
        BasicLogin(username="a", password="x", max_age=0)
    # read from the environment and not converted: a TypeError, or a login that could
    # never succeed (an int compared with the text a browser sends)
    with pytest.raises(AdminAuthError, match="max_age must be a whole number of seconds"):
        BasicLogin(username="a", password="x", max_age="3600")  # type: ignore[arg-type]
    with pytest.raises(AdminAuthError, match="username and password"):
        BasicLogin(username="a", password=1234)  # type: ignore[arg-type]
    with pytest.raises(AdminAuthError, match="secret must be a non-empty string"):
        BasicLogin(username="a", password="x", secret=42)  # type: ignore[arg-type]
    # a cookie signed with a short key can be forged by guessing the key
    with pytest.raises(AdminAuthError, match="secret is 6 characters long, fewer than 16"):
        BasicLogin(username="a", password="x", secret="s3cret")
    with pytest.raises(AdminAuthError, match="secrets.token_urlsafe"):
        BasicLogin(username="a", password="x", secret=b"short")
    BasicLogin(username="a", password="x", secret="x" * 16)
    assert "pw-9f2" not in repr(BasicLogin(username="a", password="pw-9f2"))


async def test_login_refuses_a_large_body_without_reading_it(
    login_app: tuple[FastAPI, BasicLogin],
) -> None:
    """The login form is open to anyone: a huge body is refused with 413 after reading
    little more than the form's 8 KB limit, and a declared one before reading at all."""
    app, _ = login_app
    sent: list[int] = []

    async def body(chunks: int) -> AsyncIterator[bytes]:
        for _ in range(chunks):
            sent.append(1)
            yield b"a" * 65536

    form = {"content-type": "application/x-www-form-urlencoded"}
    async with _client(app) as client:
        streamed = await client.post("/tasks/login", content=body(200), headers=form)
        assert streamed.status_code == 413 and SESSION_COOKIE not in streamed.cookies
        assert len(sent) <= 2
        sent.clear()
        declared = await client.post(
            "/tasks/login", content=body(200), headers={**form, "content-length": str(200 * 65536)}
        )
        assert declared.status_code == 413 and sent == []
        ok = await client.post("/tasks/login", data={"username": "admin", "password": "s3cret"})
        assert ok.status_code == 303 and SESSION_COOKIE in ok.cookies


@pytest.mark.parametrize(
    "target",
    [
        "/tasks/../logout-everywhere",
        "/tasks/%2e%2e/account/delete",
        "/tasks/%2E%2E/%2E%2E/elsewhere",
        "/tasks/..%2f..%2fapi/admin",
        "/tasks/dashboard/../../elsewhere?x=1",
        "/tasks/%2f%2fevil.example",
        "/tasks/%5c%5cevil.example",
    ],
)
async def test_login_next_cannot_climb_out_of_the_admin(
    login_app: tuple[FastAPI, BasicLogin], target: str
) -> None:
    """A ``next=`` that starts with the admin path but climbs out of it with ``..``
    (plain or percent-encoded) is ignored: the browser goes to the dashboard."""
    app, _ = login_app
    async with _client(app) as client:
        ok = await client.post(
            "/tasks/login", data={"username": "admin", "password": "s3cret", "next": target}
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/tasks/dashboard"


async def test_login_brings_a_filtered_dashboard_link_back_with_its_filters(
    login_app: tuple[FastAPI, BasicLogin],
) -> None:
    """A bookmarked ``/tasks/dashboard?status=failed&func=...`` opened without a session
    comes back after the login with its filters (they live in the query string)."""
    app, _ = login_app
    page = "/tasks/dashboard?status=failed&func=charge_card"
    async with _client(app) as client:
        redirect = await client.get(page, headers={"accept": "text/html"})
        assert redirect.status_code == 303
        login = await client.get(redirect.headers["location"])
        assert login.status_code == 200
        hidden = httpx.QueryParams(redirect.headers["location"].partition("?")[2])["next"]
        assert hidden == page and f'value="{page.replace("&", "&amp;")}"' in login.text
        ok = await client.post(
            "/tasks/login", data={"username": "admin", "password": "s3cret", "next": hidden}
        )
        assert ok.status_code == 303 and ok.headers["location"] == page
        assert (await client.get(page, headers={"accept": "text/html"})).status_code == 200


async def _sign_in_like_a_browser(client: httpx.AsyncClient, page: str) -> httpx.Response:
    """Open ``page`` without a session, follow the redirect to the login form, submit
    it with the ``next`` the redirect carried; return the login's answer."""
    redirect = await client.get(page, headers={"accept": "text/html"})
    assert redirect.status_code == 303, redirect.text
    location = redirect.headers["location"]
    form = await client.get(location)
    assert form.status_code == 200, location
    path, _, query = location.partition("?")
    target = httpx.QueryParams(query)["next"]
    return await client.post(path, data={"username": "admin", "password": "s3cret", "next": target})


@pytest.mark.parametrize("how", ["include-prefix", "root-path", "mounted-app"])
async def test_login_works_wherever_the_admin_is_mounted(clock: ManualClock, how: str) -> None:
    """Included under a prefix of the app's own, served behind a proxy prefix
    (``root_path``) or inside a mounted sub-app, the admin is at ``/ops/tasks`` for the
    browser: the login redirects, the cookie's path and ``next`` all follow it."""
    tm = TaskManager(clock=clock)
    auth = BasicLogin(username="admin", password="s3cret", secret=SECRET, clock=clock)
    app = FastAPI()
    root_path = ""
    if how == "include-prefix":
        app.include_router(TaskAdmin(None, tm, auth=auth).router, prefix="/ops")
    elif how == "root-path":
        TaskAdmin(app, tm, auth=auth)
        root_path = "/ops"
    else:
        sub = FastAPI()
        TaskAdmin(sub, tm, auth=auth)
        app.mount("/ops", sub)
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with tm, httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await _sign_in_like_a_browser(client, "/ops/tasks/dashboard")
        assert ok.status_code == 303 and ok.headers["location"] == "/ops/tasks/dashboard"
        assert "Path=/ops/tasks" in ok.headers["set-cookie"]
        page = await client.get("/ops/tasks/dashboard", headers={"accept": "text/html"})
        assert page.status_code == 200  # the cookie jar sent the cookie: its path fits
        refused = await client.post(
            "/ops/tasks/login",
            data={"username": "admin", "password": "s3cret", "next": "/tasks/dashboard"},
        )
        assert refused.headers["location"] == "/ops/tasks/dashboard"
        out = await client.post("/ops/tasks/logout")
        assert out.status_code == 303 and out.headers["location"] == "/ops/tasks/login"
        assert "Path=/ops/tasks" in out.headers["set-cookie"]
        assert (await client.get("/ops/tasks/api/tasks")).status_code == 401
