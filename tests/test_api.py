"""The REST API: a real Jupyter server (pytest-jupyter) with the extension, forwarding to
the real trainorch service it started, with Dask workers behind it."""

from __future__ import annotations

import getpass
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.web
from conftest import wait_until

from jupyter_trainorch.api.handlers import service_handlers
from jupyter_trainorch.api.proxy import front_handlers
from jupyter_trainorch.service import read_runtime

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config(request):
    extensions = {"jupyter_trainorch": True}
    if "dashboard" in request.node.name or "mlflow" in request.node.name:
        extensions["jupyter_server_proxy"] = True
    config = {"ServerApp": {"jpserver_extensions": extensions}}
    if "another_host" in request.node.name:
        config["ServerProxy"] = {"host_allowlist": ["localhost", "127.0.0.1", FAR_HOST]}
    return config


# Another host for the scheduler: a second loopback address, which is not one of the names
# the dashboard link treats as this machine.
FAR_HOST = "127.0.0.2"


@pytest.fixture
def far_scheduler(tmp_path):
    """A ``dask scheduler`` whose dashboard listens on ``FAR_HOST``."""
    import subprocess

    from conftest import dask_executable, free_port

    port, dashboard = free_port(), free_port()
    log = open(tmp_path / "scheduler.log", "w")  # noqa: SIM115
    scheduler = subprocess.Popen(
        [*dask_executable("scheduler"), "--host", FAR_HOST, "--port", str(port),
         "--dashboard-address", f"{FAR_HOST}:{dashboard}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"tcp://{FAR_HOST}:{port}"
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=15)
        log.close()


@pytest.fixture(autouse=True)
def _small_cluster(monkeypatch, request, tmp_path):
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}" if "mlflow" in request.node.name else "off"
    monkeypatch.setenv("TRAINORCH_MLFLOW", tracking)
    if "another_host" in request.node.name:
        monkeypatch.setenv("TRAINORCH_CLUSTER", request.getfixturevalue("far_scheduler"))


async def _json(jp_fetch, *parts, method="GET", body=None, headers=None, **params):
    kwargs = {"method": method, "params": params, "headers": headers or {}}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    response = await jp_fetch("trainorch", "api", *parts, **kwargs)
    return json.loads(response.body)


async def _error(jp_fetch, *parts, method="GET", body=None, **params):
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await _json(jp_fetch, *parts, method=method, body=body, **params)
    return err.value.code, json.loads(err.value.response.body)["message"]


ROUTE_VALUES = {"job_id": "abc", "name": "torch", "path": "api/jobs"}


def _methods(handler):
    """The HTTP methods the handler answers (not tornado's 405 defaults)."""
    for method in ("GET", "POST", "PATCH", "DELETE"):
        if getattr(handler, method.lower()) is not getattr(
            tornado.web.RequestHandler, method.lower()
        ):
            yield method


def _paths(routes):
    names = ROUTE_VALUES
    for pattern, handler in routes:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: names[m.group(1)], pattern)
        yield path, handler


def _service() -> tuple[str, str]:
    info = wait_until(
        lambda: read_runtime(Path(os.environ["TRAINORCH_DATA_DIR"])), what="the service"
    )
    return info.url, info.token


def _call(url: str, token: str | None, method: str = "GET", body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


async def test_every_route_refuses_requests_without_credentials(
    jp_serverapp, http_server_client, jp_base_url
):
    checked = 0
    for path, handler in _paths(front_handlers(jp_base_url)):
        for method in _methods(handler):
            response = await http_server_client.fetch(
                path,
                method=method,
                body="{}" if method in ("POST", "PATCH") else None,
                raise_error=False,
            )
            assert response.code == 403, (
                f"{method} {path} answered {response.code} without credentials"
            )
            checked += 1
    assert checked >= 4
    # The service itself: nothing without its token, nothing with a wrong one.
    url, token = _service()
    for path, handler in _paths(service_handlers("/")):
        for method in _methods(handler):
            body = b"{}" if method in ("POST", "PATCH") else None
            for credential in (None, "not-" + token):
                code = _call(url.rstrip("/") + path, credential, method, body)
                assert code == 403, f"{method} {path} answered {code} with token {credential!r}"
                checked += 1
    assert checked >= 34
    # The service is only what it says: no kernels, files or terminals.
    for path in ("api/kernels", "api/contents", "api/terminals", "files/x"):
        assert _call(url + path, token) == 404, path


async def test_submit_follow_cancel_retry_through_rest(jp_fetch, jp_serverapp):
    assert os.environ["TRAINORCH_URL"] == jp_serverapp.connection_url  # what kernels inherit
    assert os.environ["TRAINORCH_TOKEN"] == jp_serverapp.identity_provider.token

    body = {"template": "command", "params": {"cmd": "echo one; echo two"}, "name": "echo"}
    code, message = await _error(jp_fetch, "jobs", method="POST", body={**body, "user": "ada"})
    assert (code, message) == (400, "user comes from authentication; leave it out of the request")
    job = await _json(jp_fetch, "jobs", method="POST", body=body)
    assert job["state"] in ("queued", "starting", "running")
    # The job belongs to who is authenticated (the service's user).
    assert job["user"] == getpass.getuser()
    assert set(job) >= {
        "id", "name", "user", "state", "priority", "resources", "depends_on", "template", "params",
        "attempts", "max_retries", "progress", "mlflow", "created", "started", "ended",
        "terminal", "attempts_allowed", "actions", "reexecutions",
    }  # fmt: skip
    assert set(job["actions"]) >= {"read", "cancel", "rerun"}
    logs = {"lines": [], "next": 0, "finished": False}
    text: list[str] = []
    while not logs["finished"]:
        logs = await _json(jp_fetch, "jobs", job["id"], "logs", after=logs["next"], wait=5)
        text += [line["text"] for line in logs["lines"]]
    assert text == ["one", "two"]
    done = await _json(jp_fetch, "jobs", job["id"])
    assert done["state"] == "succeeded" and done["attempts"][0]["exit_code"] == 0
    assert done["terminal"] and done["reexecutions"] == 0
    assert done["template"]["name"] == "command" and len(done["template"]["hash"]) == 16

    sleeper = await _json(jp_fetch, "jobs", method="POST", body={
        "spec": {"name": "sleeper", "kind": "command", "command": "sleep 60", "resources": {"gpus": 1}},
    })  # fmt: skip
    cancelled = await _json(jp_fetch, "jobs", sleeper["id"], method="DELETE")
    assert cancelled["id"] == sleeper["id"]
    while (await _json(jp_fetch, "jobs", sleeper["id"]))["state"] != "cancelled":
        await _json(jp_fetch, "events", after=0, timeout=1)
    retried = await _json(jp_fetch, "jobs", sleeper["id"], "retry", method="POST", body={})
    assert retried["state"] in ("queued", "starting", "running")
    await _json(jp_fetch, "jobs", sleeper["id"], method="DELETE")

    listing = await _json(jp_fetch, "jobs", user=getpass.getuser())
    assert {j["id"] for j in listing["jobs"]} == {job["id"], sleeper["id"]} and listing[
        "total"
    ] == 2
    assert (await _json(jp_fetch, "jobs", user="ada"))["total"] == 0
    cluster = await _json(jp_fetch, "cluster")
    assert cluster["gpus"]["total"] == 1 and len(cluster["workers"]) == 1
    templates = await _json(jp_fetch, "templates")
    assert {"python-cell", "command", "torch"} <= {t["name"] for t in templates["templates"]}
    events = await _json(jp_fetch, "events", after=0)
    assert any(
        c["job_id"] == job["id"] and c.get("state") == "succeeded" for c in events["changes"]
    )
    metrics = await jp_fetch("trainorch", "metrics")
    assert b'trainorch_jobs{priority="normal",state="succeeded",user=' in metrics.body
    me = await _json(jp_fetch, "me")
    assert (me["name"], me["admin"], me["mode"]) == (getpass.getuser(), True, "single-user")


async def test_the_same_idempotency_key_returns_the_same_job(jp_fetch, jp_serverapp):
    body = {"template": "command", "params": {"cmd": "echo once"}, "name": "once"}
    first = await jp_fetch("trainorch", "api", "jobs", method="POST", body=json.dumps(body),
                           headers={"Idempotency-Key": "cell-7-run-1"})  # fmt: skip
    again = await jp_fetch("trainorch", "api", "jobs", method="POST", body=json.dumps(body),
                           headers={"Idempotency-Key": "cell-7-run-1"})  # fmt: skip
    assert (first.code, again.code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert json.loads(first.body)["id"] == json.loads(again.body)["id"]
    # The same key in the body (for clients that cannot set headers) is the same submission.
    token = await _json(
        jp_fetch, "jobs", method="POST", body={**body, "client_token": "cell-7-run-1"}
    )
    assert token["id"] == json.loads(first.body)["id"]
    code, message = await _error(jp_fetch, "jobs", method="POST",
                                 body={**body, "name": "other", "client_token": "cell-7-run-1"})  # fmt: skip
    assert code == 400 and "already used for job" in message
    assert (await _json(jp_fetch, "jobs"))["total"] == 1


async def test_user_errors_are_one_sentence_with_the_right_status(jp_fetch, jp_serverapp):
    cases = [
        ({"template": "nope"}, 400, "unknown template 'nope'"),
        ({"template": "command", "params": {}}, 400, "no param 'cmd' is set"),
        (
            {"template": "command", "params": {"cmd": "x"}, "overrides": {"gpus": 16}},
            400,
            "16 GPUs",
        ),
        (
            {"template": "command", "params": {"cmd": "x"}, "overrides": {"priority": "asap"}},
            400,
            "priority",
        ),
        (
            {"spec": {"name": "x", "kind": "python", "bogus": 1}},
            400,
            "spec.bogus is not a known field",
        ),
        ({}, 400, "either spec or template"),
        (
            {"template": "command", "params": {"cmd": "x"}, "client_token": "x" * 200},
            400,
            "Idempotency-Key",
        ),
    ]
    for body, status, fragment in cases:
        code, message = await _error(jp_fetch, "jobs", method="POST", body=body)
        assert code == status and fragment in message and "\n" not in message, message
    code, message = await _error(jp_fetch, "jobs", "doesnotexist")
    assert (code, message) == (404, "there is no job 'doesnotexist'")
    code, message = await _error(jp_fetch, "jobs", state="sleeping")
    assert code == 400 and "state must be one of" in message
    code, message = await _error(jp_fetch, "jobs", limit="many")
    assert code == 400 and message == "limit must be a whole number, not 'many'"


async def test_priority_change_and_the_websocket_push_channel(jp_fetch, jp_ws_fetch, jp_serverapp):
    socket = await jp_ws_fetch("trainorch", "api", "events", "ws")
    blocker = await _json(jp_fetch, "jobs", method="POST", body={
        "spec": {"name": "blocker", "kind": "command", "command": "sleep 30", "resources": {"gpus": 1}},
    })  # fmt: skip
    waiting = await _json(jp_fetch, "jobs", method="POST", body={
        "spec": {"name": "waiting", "kind": "command", "command": "echo hi", "resources": {"gpus": 1},
                 "priority": "low"},
    })  # fmt: skip
    seen: list[dict] = []
    while not any(c["job_id"] == blocker["id"] and c.get("state") == "running" for c in seen):
        seen.append(json.loads(await socket.read_message()))
    assert [c["seq"] for c in seen] == sorted(c["seq"] for c in seen)
    assert (await _json(jp_fetch, "jobs", waiting["id"]))["queue_position"] == 1

    changed = await _json(
        jp_fetch, "jobs", waiting["id"], method="PATCH", body={"priority": "urgent"}
    )
    assert (changed["priority"], changed["priority_class"], changed["state"]) == (
        300,
        "urgent",
        "queued",
    )
    assert changed["spec"]["command"] == "echo hi"  # the detail carries the rendered spec
    code, message = await _error(
        jp_fetch, "jobs", blocker["id"], method="PATCH", body={"priority": "high"}
    )
    assert code == 409 and "only a job that has not started can change priority" in message
    code, message = await _error(jp_fetch, "jobs", waiting["id"], method="PATCH", body={"gpus": 2})
    assert code == 400 and message.startswith("only priority can be changed")

    await _json(jp_fetch, "jobs", blocker["id"], method="DELETE")
    while not any(c["job_id"] == waiting["id"] and c.get("state") == "succeeded" for c in seen):
        seen.append(json.loads(await socket.read_message()))
    assert any(c["job_id"] == waiting["id"] and c["kind"] == "logs" for c in seen)
    socket.close()


async def test_stopping_the_service_with_running_jobs_asks_for_force(jp_fetch, jp_serverapp):
    await _json(jp_fetch, "jobs", method="POST", body={
        "spec": {"name": "long", "kind": "command", "command": "sleep 60", "resources": {"gpus": 1}},
    })  # fmt: skip
    wait_until(lambda: _running_jobs() == 1, what="the job to run")
    code, message = await _error(jp_fetch, "service", "stop", method="POST", body={})
    assert code == 409 and "1 job(s) are running" in message
    status = await _json(jp_fetch, "service")
    assert status["running"] == 1 and status["mode"] == "single-user"


def _running_jobs() -> int:
    url, token = _service()
    request = urllib.request.Request(url + "trainorch/api/cluster")
    request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["running"]


async def test_long_polls_hold_no_thread_and_numbers_must_be_finite(jp_fetch, jp_serverapp):
    """Many clients waiting (job.wait, --follow, panels) must not stall everyone else."""
    import asyncio
    import time

    job = await _json(jp_fetch, "jobs", method="POST", body={
        "spec": {"name": "quiet", "kind": "command", "command": "sleep 30", "resources": {"gpus": 1}},
    })  # fmt: skip
    last = (await _json(jp_fetch, "events"))["last"]
    # More long polls than the service has worker threads (6 on two cores), fewer than the
    # test client's ten connections.
    waiting = [asyncio.ensure_future(_json(jp_fetch, "events", after=last + 1, timeout=15))
               for _ in range(4)]  # fmt: skip
    waiting += [asyncio.ensure_future(_json(jp_fetch, "jobs", job["id"], "logs", wait=15, after=10**9))
                for _ in range(4)]  # fmt: skip
    await asyncio.sleep(1.0)
    started = time.monotonic()
    listing = await _json(jp_fetch, "jobs")
    assert listing["total"] == 1 and time.monotonic() - started < 5, (
        "a plain read waited on long polls"
    )
    await _json(jp_fetch, "jobs", job["id"], method="DELETE")  # ends the long polls
    await asyncio.gather(*waiting)
    for query in ({"timeout": "nan"}, {"timeout": "inf"}, {"timeout": "61"}, {"timeout": "-1"}):
        code, message = await _error(jp_fetch, "events", **query)
        assert code == 400 and message.startswith(
            "timeout must be a number of seconds from 0 to 60"
        )
    code, message = await _error(jp_fetch, "jobs", job["id"], "logs", wait="nan")
    assert code == 400 and message == "wait must be a number of seconds from 0 to 60, not 'nan'"
    code, message = await _error(jp_fetch, "jobs", offset="1e20")
    assert code == 400 and message.startswith("offset must be a whole number")


async def test_the_dask_dashboard_link_goes_through_the_server(jp_fetch, jp_serverapp, jp_base_url):
    with pytest.raises(tornado.httpclient.HTTPClientError) as redirect:
        await jp_fetch("trainorch", "dashboard", follow_redirects=False)
    assert redirect.value.code == 302
    location = redirect.value.response.headers["Location"]
    assert re.fullmatch(re.escape(jp_base_url) + r"proxy/\d+/status", location), location
    page = await jp_fetch(*location[len(jp_base_url) :].split("/"))
    assert page.code == 200 and b"Dask" in page.body


async def test_the_dashboard_of_a_scheduler_on_another_host_goes_through_the_server(
    jp_fetch, jp_serverapp, jp_base_url, http_server_client, jp_auth_header
):
    with pytest.raises(tornado.httpclient.HTTPClientError) as redirect:
        await jp_fetch("trainorch", "dashboard", follow_redirects=False, request_timeout=60)
    location = redirect.value.response.headers["Location"]
    pattern = re.escape(f"{jp_base_url}proxy/{FAR_HOST}:") + r"\d+/status"
    assert re.fullmatch(pattern, location), location
    # As the browser asks for it (jp_fetch would escape the colon).
    page = await http_server_client.fetch(location, headers=jp_auth_header)
    assert page.code == 200 and b"Dask" in page.body


async def test_mlflow_run_links_open_the_ui_this_server_starts(jp_fetch, jp_serverapp, jp_base_url):
    run = "0123456789abcdef0123456789abcdef"
    for query, message in (
        ({"experiment": "1; drop"}, "experiment must be an MLflow experiment id (digits)"),
        ({"experiment": "1", "run": "../x"}, "run must be an MLflow run id (32 hex digits)"),
    ):
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await jp_fetch("trainorch", "mlflow", params=query, follow_redirects=False)
        assert refused.value.code == 400 and message in refused.value.response.body.decode()
    with pytest.raises(tornado.httpclient.HTTPClientError) as redirect:
        await jp_fetch(
            "trainorch", "mlflow", params={"experiment": "0", "run": run}, follow_redirects=False
        )
    assert redirect.value.code == 302
    location = redirect.value.response.headers["Location"]
    assert location == f"{jp_base_url}mlflow/#/experiments/0/runs/{run}"
    # The UI starts on this first request (jupyter-server-proxy) and answers through the server,
    # its API included: the run search the UI makes is a POST.
    try:
        page = await jp_fetch("mlflow/", request_timeout=120)
        assert page.code == 200 and b"<title>MLflow</title>" in page.body
        found = await jp_fetch(
            "mlflow", "ajax-api", "2.0", "mlflow", "runs", "search", method="POST",
            body=json.dumps({"experiment_ids": ["0"]}), request_timeout=60,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert found.code == 200 and isinstance(json.loads(found.body), dict)
    finally:
        # The proxied UI lives as long as the process that serves Jupyter: here, pytest.
        stopped = await _stop_proxied_servers()
    assert stopped, "the MLflow UI was not found among this process's children"


async def _stop_proxied_servers() -> int:
    """Stop what jupyter-server-proxy started: it restarts a process that dies of a signal,
    and keeps it as long as the process serving Jupyter (here, pytest) lives."""
    import gc

    from simpervisor import SupervisedProcess

    processes = [o for o in gc.get_objects() if isinstance(o, SupervisedProcess) and o.running]
    for process in processes:
        await process.terminate()
    return len(processes)


async def test_mlflow_links_go_to_a_configured_ui_or_tracking_server(jp_fetch, jp_serverapp):
    from jupyter_trainorch.api.proxy import MlflowTarget

    _service()  # started with the server: wait for it, so that the test's end stops it
    settings = jp_serverapp.web_app.settings
    for target, expected in (
        (MlflowTarget("https://mlflow.example/", "sqlite:///x.db"), "https://mlflow.example/#/experiments/3"),
        (MlflowTarget("", "http://tracking.example:5000"), "http://tracking.example:5000/#/experiments/3"),
    ):  # fmt: skip
        settings["trainorch_mlflow"] = target
        with pytest.raises(tornado.httpclient.HTTPClientError) as redirect:
            await jp_fetch(
                "trainorch", "mlflow", params={"experiment": "3"}, follow_redirects=False
            )
        assert redirect.value.response.headers["Location"] == expected
    settings["trainorch_mlflow"] = MlflowTarget("", None)
    with pytest.raises(tornado.httpclient.HTTPClientError) as off:
        await jp_fetch("trainorch", "mlflow", params={"experiment": "3"})
    assert off.value.code == 404 and "tracking is off" in off.value.response.body.decode()
