"""A shared JupyterHub: one trainorch service for every user, reached through their servers.

A real JupyterHub on 127.0.0.1 (DummyAuthenticator, SimpleLocalProcessSpawner and
configurable-http-proxy from npm) loads examples/jupyterhub/jupyterhub_config.py with its
site values replaced for a temp folder: the trainorch service runs hub-managed, on a private
PostgreSQL store and a local cluster. alice submits from a kernel in her server; bob sees
her job only as a queue row; admins act on it; a token without the service's scope is
refused; her job outlives her server.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, stop_services_under, wait_until

from jupyter_trainorch.orchestrator.access import QUEUE_VIEW_FIELDS

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "examples" / "jupyterhub" / "jupyterhub_config.py"
)
SERVICE = "trainorch"
SCOPE = f"access:services!service={SERVICE}"
FINAL = ("succeeded", "failed", "cancelled")
# Users: alice and bob; ada is a trainorch admin (c.TrainOrch.admin_users), grace one through
# the ml-admins group (c.TrainOrch.admin_groups), carol through the hub's admin flag.
USERS = ("alice", "bob", "ada", "grace")
HUB_ADMIN = "carol"

pytestmark = pytest.mark.timeout(300)

LINES = """\
%%train --name {name} lines={lines} pause={pause}
import time
for i in range(lines):
    print("line", i, flush=True)
    time.sleep(pause)
"""


def _unavailable(reason: str) -> None:
    """Skip, except on CI, where the hub test must run: fail."""
    if os.environ.get("CI"):
        pytest.fail(f"the JupyterHub test cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"JupyterHub test skipped: {reason}")


def call(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    """One HTTP request: (status, JSON or bytes), errors included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"token {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, kind = (
                response.status,
                response.read(),
                response.headers.get_content_type(),
            )
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get_content_type()
    if kind == "application/json" and raw:
        try:
            return status, json.loads(raw)
        except ValueError:
            pass  # labelled JSON but not (a zip, a pickle): the bytes
    return status, raw


def eventually(predicate: Any, timeout: float, what: str) -> Any:
    """``wait_until`` at a pace a hub and a 2-core machine bear: every request goes through
    the proxy, and the service asks the hub about each new token."""
    return wait_until(lambda: predicate() or time.sleep(0.2), timeout=timeout, what=what)


@dataclass
class Hub:
    root: Path
    url: str  # the proxy: http://127.0.0.1:PORT/
    service_url: str  # the service through the proxy: <url>services/trainorch/
    driver: str  # a token of a test service that manages users, servers and tokens
    proc: subprocess.Popen
    tokens: dict[str, str] = field(default_factory=dict)

    def log_tail(self) -> str:
        log = self.root / "hub.log"
        return log.read_text(errors="replace")[-6000:] if log.exists() else ""

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return call(method, f"{self.url}hub/api/{path}", self.driver, body)

    def token(self, user: str, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"note": "test_hub", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        status, model = self.api("POST", f"users/{user}/tokens", body)
        assert status == 201, (status, model)
        return model["token"]

    def service(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        """The trainorch API of the shared service, as ``user``, through the hub's proxy."""
        return call(method, f"{self.service_url}trainorch/api/{path}", self.tokens[user], body)

    def own_server(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        """The trainorch API through ``user``'s own Jupyter server (which forwards it)."""
        return call(method, f"{self.url}user/{user}/trainorch/api/{path}", self.tokens[user], body)

    def server_state(self, user: str) -> dict[str, Any] | None:
        status, model = self.api("GET", f"users/{user}")
        assert status == 200, (status, model)
        return model["servers"].get("")

    def start_server(self, user: str) -> None:
        status, answer = self.api("POST", f"users/{user}/server")
        assert status in (201, 202), (status, answer, self.log_tail())
        eventually(
            lambda: (self.server_state(user) or {}).get("ready"),
            timeout=120,
            what=f"{user}'s server to start",
        )

    def stop_server(self, user: str) -> None:
        status, answer = self.api("DELETE", f"users/{user}/server")
        assert status in (202, 204), (status, answer)
        eventually(
            lambda: self.server_state(user) is None, timeout=90, what=f"{user}'s server to stop"
        )


def _config(root: Path, ports: dict[str, int], proxy: str, db: str, driver: str) -> str:
    """The example config with this test's site values: ports, folders, store and cluster."""
    service_address = f"http://127.0.0.1:{ports['service']}"
    allow_root = ["--allow-root"] if os.geteuid() == 0 else []
    service_dir = root / "service"
    service_env = {
        "TRAINORCH_DB": db,
        "TRAINORCH_CLUSTER": "local",
        "TRAINORCH_DATA_DIR": str(service_dir / "data"),
        "TRAINORCH_WORKERS": "1",
        "TRAINORCH_GPUS_PER_WORKER": "1",
        "TRAINORCH_MLFLOW": "off",
        "TRAINORCH_CLUSTER_IDLE_TIMEOUT": "120",
        "HOME": str(service_dir),
        "JUPYTER_CONFIG_DIR": str(service_dir / "config"),
        "JUPYTER_DATA_DIR": str(service_dir / "share"),
        "JUPYTER_RUNTIME_DIR": str(service_dir / "runtime"),
        "PYTHONUNBUFFERED": "1",
    }
    return f"""\
c = get_config()  # noqa: F821
load_subconfig({str(EXAMPLE)!r})  # noqa: F821

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {ports["proxy"]}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {ports["hub"]}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["proxy_api"]}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.pid_file = {str(root / "proxy.pid")!r}
c.JupyterHub.db_url = {"sqlite:///" + str(root / "jupyterhub.sqlite")!r}
c.JupyterHub.cookie_secret_file = {str(root / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(root / "jupyterhub.pid")!r}

c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(USERS)!r}
c.Authenticator.admin_users = {{{HUB_ADMIN!r}}}
c.JupyterHub.load_groups["ml-admins"]["users"] = ["grace"]

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(root / "home" / "{username}")!r}
c.Spawner.cmd = {[sys.executable, "-m", "jupyterhub.singleuser"]!r}
c.Spawner.args = {allow_root!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment["TRAINORCH_SERVICE_URL"] = {service_address + "/services/trainorch/"!r}
c.Spawner.environment["PYTHONUNBUFFERED"] = "1"

trainorch = next(s for s in c.JupyterHub.services if s["name"] == "trainorch")
trainorch["url"] = {service_address!r}
# The same arguments as the example's, from this interpreter rather than a script on PATH.
assert trainorch["command"][:3] == ["trainorch", "serve", "--hub"], trainorch["command"]
trainorch["command"] = (
    {[sys.executable, "-m", "jupyter_trainorch.cli"]!r} + trainorch["command"][1:] + {allow_root!r}
)
trainorch["environment"].update({service_env!r})

c.JupyterHub.services.append({{"name": "test-driver", "api_token": {driver!r}}})
c.JupyterHub.load_roles.append({{
    "name": "test-driver",
    "scopes": ["admin:users", "admin:servers", "tokens"],
    "services": ["test-driver"],
}})
"""


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stop_all(hub_proc: subprocess.Popen, procs: list[Any]) -> None:
    """The hub first (it stops the proxy, the servers and the service), then whatever of
    what it started is still there, by pid."""
    import psutil

    if hub_proc.poll() is None:
        hub_proc.send_signal(signal.SIGTERM)
        try:
            hub_proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            hub_proc.kill()
            hub_proc.wait(timeout=10)
    alive = [p for p in procs if p.is_running()]
    for proc in alive:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=20)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        _unavailable("jupyterhub is not installed (pip install jupyterhub)")
    proxy = shutil.which("configurable-http-proxy")
    if proxy is None:
        _unavailable(
            "configurable-http-proxy is not on PATH (npm install -g configurable-http-proxy)"
        )
    from postgres import running_postgres

    root = tmp_path_factory.mktemp("hub")
    ports = {name: free_port() for name in ("proxy", "proxy_api", "hub", "service")}
    driver = secrets.token_hex(16)
    with ExitStack() as stack:
        pg = stack.enter_context(running_postgres())
        db = pg.create_database()
        (root / "jupyterhub_config.py").write_text(_config(root, ports, proxy, db, driver))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TRAINORCH_", "JUPYTERHUB_", "JPY_"))
            and k not in ("JUPYTER_CONFIG_DIR", "MLFLOW_TRACKING_URI")
        }
        log = stack.enter_context(open(root / "hub.log", "ab"))  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(root / "jupyterhub_config.py")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        seen: list[Any] = []
        stack.callback(lambda: stop_services_under(root))
        stack.callback(lambda: _stop_all(proc, seen + _descendants(proc.pid)))
        url = f"http://127.0.0.1:{ports['proxy']}/"
        hub = Hub(root, url, f"{url}services/{SERVICE}/", driver, proc)

        def hub_answers() -> bool:
            assert proc.poll() is None, hub.log_tail()
            try:
                return hub.api("GET", "user")[0] == 200
            except OSError:
                return False

        eventually(hub_answers, timeout=90, what="the hub to answer")
        for user in (*USERS, HUB_ADMIN):
            hub.tokens[user] = hub.token(user)

        def service_ready() -> bool:
            assert proc.poll() is None, hub.log_tail()
            try:
                status, answer = hub.service("GET", "service", "ada")
            except OSError:
                return False
            return status == 200 and answer["workers"] >= 1

        eventually(service_ready, timeout=150, what="the trainorch service and its cluster")
        seen.extend(_descendants(proc.pid))
        yield hub
        seen.extend(_descendants(proc.pid))


@dataclass
class Session:
    """alice's server, a kernel in it, and the job she submitted from that kernel."""

    kernel: str
    job: dict[str, Any]


def _execute(hub: Hub, user: str, kernel: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a kernel of ``user``'s server over its websocket; return its output."""
    return asyncio.run(_execute_async(hub, user, kernel, code, timeout))


async def _execute_async(hub: Hub, user: str, kernel: str, code: str, timeout: float) -> str:
    from tornado import httpclient, websocket

    url = hub.url.replace("http", "ws", 1) + f"user/{user}/api/kernels/{kernel}/channels"
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    connection = await websocket.websocket_connect(httpclient.HTTPRequest(url, headers=headers))
    msg_id = uuid.uuid4().hex
    connection.write_message(
        json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        })
    )  # fmt: skip
    output: list[str] = []
    idle = replied = False
    deadline = time.monotonic() + timeout
    try:
        while not (idle and replied):
            raw = await asyncio.wait_for(connection.read_message(), deadline - time.monotonic())
            assert raw is not None, "the kernel's websocket closed"
            if isinstance(raw, bytes):
                continue  # a message with binary buffers (widgets): not ours to read
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["header"]["msg_type"], message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                output.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                replied = True
                assert content["status"] == "ok", content
    finally:
        connection.close()
    return "".join(output)


def _submit_from_kernel(hub: Hub, kernel: str, name: str, lines: int, pause: float) -> dict:
    _execute(hub, "alice", kernel, LINES.format(name=name, lines=lines, pause=pause))
    status, listing = hub.own_server("GET", "jobs?limit=200", "alice")
    assert status == 200, (status, listing)
    named = [job for job in listing["jobs"] if job["name"] == name]
    assert len(named) == 1, listing
    return named[0]


@pytest.fixture(scope="module")
def alice(hub: Hub) -> Session:
    hub.start_server("alice")
    status, kernel = call("POST", f"{hub.url}user/alice/api/kernels", hub.tokens["alice"], {})
    assert status == 201, (status, kernel)
    _execute(hub, "alice", kernel["id"], "%load_ext jupyter_trainorch")
    job = _submit_from_kernel(hub, kernel["id"], "shared-job", lines=20, pause=0.25)
    return Session(kernel["id"], job)


def _logs(hub: Hub, user: str, job_id: str) -> list[str]:
    status, answer = hub.service("GET", f"jobs/{job_id}/logs", user)
    assert status == 200, (status, answer)
    return [line["text"] for line in answer["lines"]]


def _job(hub: Hub, user: str, job_id: str) -> dict[str, Any]:
    status, job = hub.service("GET", f"jobs/{job_id}", user)
    assert status == 200, (status, job)
    return job


def _read_socket(hub: Hub, url: str, user: str, until: Any, timeout: float) -> list[dict]:
    """Messages of a trainorch event websocket until ``until(message)`` or ``timeout``."""

    async def read() -> list[dict]:
        from tornado import httpclient, websocket

        request = httpclient.HTTPRequest(
            url.replace("http", "ws", 1), headers={"Authorization": f"token {hub.tokens[user]}"}
        )
        connection = await websocket.websocket_connect(request)
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(
                        connection.read_message(), deadline - time.monotonic()
                    )
                except asyncio.TimeoutError:
                    break
                assert raw is not None, "the event websocket closed"
                seen.append(json.loads(raw))
                if until(seen[-1]):
                    break
        finally:
            connection.close()
        return seen

    return asyncio.run(read())


def test_the_example_config_carries_what_the_hub_needs() -> None:
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(EXAMPLE.name, str(EXAMPLE.parent)).load_config()
    services = {service["name"]: service for service in config.JupyterHub.services}
    service = services[SERVICE]
    assert service["command"][:3] == ["trainorch", "serve", "--hub"]
    assert "--TrainOrch.admin_users=ada" in service["command"]
    assert service["url"].startswith("http://")
    env = service["environment"]
    assert env["TRAINORCH_DB"].startswith("postgresql+psycopg://")
    assert env["TRAINORCH_CLUSTER"].startswith("tcp://")
    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    assert {"self", SCOPE} <= set(roles["user"]["scopes"])
    assert SCOPE in config.Spawner.server_token_scopes
    assert "access:servers!server" in config.Spawner.server_token_scopes
    shared = config.Spawner.environment["TRAINORCH_SERVICE_URL"]
    assert shared == service["url"] + f"/services/{SERVICE}/"


def test_alice_submits_from_a_kernel_through_her_server(hub: Hub, alice: Session) -> None:
    job = alice.job
    assert job["user"] == "alice" and not job.get("restricted")
    status, me = hub.own_server("GET", "me", "alice")
    assert status == 200 and (me["name"], me["admin"], me["mode"]) == ("alice", False, "hub")

    # The push channel, relayed by her server: her job's log changes (which only its owner
    # and admins are sent) arrive, so the service knew who was calling.
    changes = _read_socket(
        hub,
        f"{hub.url}user/alice/trainorch/api/events/ws?after=0",
        "alice",
        lambda change: change["job_id"] == job["id"] and change["kind"] == "logs",
        timeout=60,
    )
    assert any(c["job_id"] == job["id"] and c["kind"] == "logs" for c in changes), changes

    # Her server forwards; it runs no orchestrator or cluster of its own.
    home = hub.root / "home" / "alice"
    assert home.is_dir()
    assert not [p for name in ("service.json", "cluster.json") for p in home.rglob(name)]
    assert list((hub.root / "service").rglob("cluster.json"))


def test_bob_sees_her_job_only_as_a_queue_row(hub: Hub, alice: Session) -> None:
    job_id = alice.job["id"]
    status, me = hub.service("GET", "me", "bob")
    assert status == 200 and (me["name"], me["admin"]) == ("bob", False), me

    status, listing = hub.service("GET", "jobs", "bob")
    assert status == 200, listing
    row = next(j for j in listing["jobs"] if j["id"] == job_id)
    assert row["restricted"] is True and row["user"] == "alice" and row["name"] == "shared-job"
    assert row["state"] in ("queued", "starting", "running", "succeeded"), row
    assert set(row) <= {*QUEUE_VIEW_FIELDS, "actions", "restricted"}, row
    assert row["actions"] == []
    status, single = hub.service("GET", f"jobs/{job_id}", "bob")
    assert status == 200 and single["restricted"] is True and "spec" not in single

    refused = [
        ("GET", f"jobs/{job_id}/logs", None),
        ("GET", f"jobs/{job_id}/package", None),
        ("GET", f"jobs/{job_id}/outputs", None),
        ("GET", f"jobs/{job_id}/metrics", None),
        ("DELETE", f"jobs/{job_id}", None),
        ("POST", f"jobs/{job_id}/retry", {}),
        ("POST", f"jobs/{job_id}/rerun", {}),
        ("PATCH", f"jobs/{job_id}", {"priority": "high"}),
    ]
    for method, path, body in refused:
        status, answer = hub.service(method, path, "bob", body)
        assert status == 403, (method, path, status, answer)
        message = answer["message"]
        assert "belongs to alice" in message and "\n" not in message, message
        assert message.count(". ") == 0, message
    status, answer = hub.service("POST", "service/stop", "bob", {})
    assert status == 403, answer

    # The push channel shows bob her job's state changes only, never its logs or progress.
    changes = _read_socket(
        hub, f"{hub.service_url}trainorch/api/events/ws?after=0", "bob", lambda c: False, 3
    )
    hers = [c for c in changes if c.get("user") == "alice"]
    assert hers and all(c["kind"] == "job" for c in hers), changes
    assert all(
        set(c) <= {"seq", "kind", "job_id", "time", "user", "state", "priority"} for c in hers
    )


def test_admins_act_on_her_jobs(hub: Hub, alice: Session) -> None:
    for admin in ("ada", "grace", HUB_ADMIN):
        status, me = hub.service("GET", "me", admin)
        assert status == 200 and me["admin"] is True and me["name"] == admin, me
    shared = alice.job["id"]
    assert "line 0" in eventually(
        lambda: _logs(hub, HUB_ADMIN, shared), timeout=60, what="the shared job's first line"
    )
    for admin in ("ada", "grace"):
        status, package = hub.service("GET", f"jobs/{shared}/package", admin)
        assert status == 200 and package[:2] == b"PK", (status, package[:200])

    # A second job of alice's, submitted through her server: ada cancels it and retries it.
    source = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.5)\n"
    body = {"template": "python-cell", "name": "long-job", "source": source}
    status, job = hub.own_server("POST", "jobs", "alice", body)
    assert status == 201 and job["user"] == "alice", (status, job)
    eventually(lambda: _job(hub, "ada", job["id"])["state"] == "running", 90, "long-job to run")
    status, answer = hub.service("DELETE", f"jobs/{job['id']}", "ada")
    assert status == 200, answer
    eventually(lambda: _job(hub, "ada", job["id"])["state"] == "cancelled", 60, "the cancel")
    status, answer = hub.service("POST", f"jobs/{job['id']}/retry", "ada", {})
    assert status == 200 and answer["state"] not in FINAL and answer["user"] == "alice", answer

    def running_again() -> bool:
        again = _job(hub, "alice", job["id"])
        return again["state"] == "running" and len(again["attempts"]) == 2

    eventually(running_again, 90, "the retried job to run")
    status, answer = hub.service("DELETE", f"jobs/{job['id']}", HUB_ADMIN)
    assert status == 200, answer
    eventually(lambda: _job(hub, "alice", job["id"])["state"] == "cancelled", 60, "the cancel")


def test_a_token_without_the_service_scope_is_refused(hub: Hub) -> None:
    limited = hub.token("alice", scopes=["access:servers!user=alice"])
    status, model = call("GET", f"{hub.url}hub/api/user", limited)
    assert status == 200 and model["name"] == "alice"  # a valid token of hers
    assert SCOPE not in model["scopes"]
    for path in ("me", "jobs"):
        status, answer = call("GET", f"{hub.service_url}trainorch/api/{path}", limited)
        assert status == 403, (path, status, answer)
        assert f"alice's token lacks the scope {SCOPE}" in answer["message"], answer
        assert "\n" not in answer["message"]
    # Neither a service's token, nor a token the hub does not know, nor none at all.
    for token in (hub.driver, "not-a-token", None):
        status, _ = call("GET", f"{hub.service_url}trainorch/api/jobs", token)
        assert status == 403, (token == hub.driver, status)
    status, _ = call("GET", f"{hub.service_url}trainorch/api/me", hub.tokens["alice"])
    assert status == 200


def test_her_job_outlives_her_server(hub: Hub, alice: Session) -> None:
    job = _submit_from_kernel(hub, alice.kernel, "outlives-server", lines=100, pause=0.25)
    eventually(lambda: len(_logs(hub, "alice", job["id"])) >= 3, 90, "its first lines")
    hub.stop_server("alice")
    # Her server and kernel are gone; the job is not.
    assert _job(hub, "alice", job["id"])["state"] == "running"

    done = eventually(
        lambda: (lambda j: j if j["state"] in FINAL else None)(_job(hub, "alice", job["id"])),
        timeout=120,
        what="the job to finish without her server",
    )
    assert done["state"] == "succeeded", done
    assert len(done["attempts"]) == 1 and done["reexecutions"] == 0, done
    assert _logs(hub, "alice", job["id"]) == [f"line {i}" for i in range(100)]

    hub.start_server("alice")
    status, seen = hub.own_server("GET", f"jobs/{job['id']}", "alice")
    assert status == 200 and seen["state"] == "succeeded" and seen["user"] == "alice", seen
    status, listing = hub.own_server("GET", "jobs?user=alice", "alice")
    assert status == 200
    assert {"shared-job", "outlives-server"} <= {j["name"] for j in listing["jobs"]}
