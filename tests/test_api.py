"""The REST API in a real jupyter_server (pytest-jupyter), orchestrator and Dask behind it."""

from __future__ import annotations

import json
import os
import re

import pytest
import tornado.httpclient

from jupyter_trainorch.api.handlers import handlers

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"jupyter_trainorch": True}}}


@pytest.fixture(autouse=True)
def _small_cluster(monkeypatch):
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")


async def _json(jp_fetch, *parts, method="GET", body=None, **params):
    kwargs = {"method": method, "params": params}
    if body is not None:
        kwargs["body"] = json.dumps(body)
    response = await jp_fetch("trainorch", "api", *parts, **kwargs)
    return json.loads(response.body)


async def _error(jp_fetch, *parts, method="GET", body=None, **params):
    with pytest.raises(tornado.httpclient.HTTPClientError) as err:
        await _json(jp_fetch, *parts, method=method, body=body, **params)
    return err.value.code, json.loads(err.value.response.body)["message"]


async def test_every_route_refuses_requests_without_credentials(jp_serverapp, http_server_client, jp_base_url):
    routes = handlers(jp_base_url)
    assert len(routes) >= 10
    checked = 0
    for pattern, handler in routes:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "abc" if m.group(1) == "job_id" else "torch", pattern)
        for method in ("GET", "POST", "DELETE"):
            if method.lower() not in handler.__dict__:
                continue
            response = await http_server_client.fetch(
                path.replace("@", "%40"),
                method=method,
                body="{}" if method == "POST" else None,
                raise_error=False,
            )
            assert response.code == 403, f"{method} {path} answered {response.code} without credentials"
            checked += 1
    assert checked >= 11


async def test_submit_follow_cancel_retry_through_rest(jp_fetch, jp_serverapp):
    assert os.environ["TRAINORCH_URL"] == jp_serverapp.connection_url  # what kernels inherit
    assert os.environ["TRAINORCH_TOKEN"] == jp_serverapp.identity_provider.token

    job = await _json(jp_fetch, "jobs", method="POST", body={
        "template": "command", "params": {"cmd": "echo one; echo two"}, "name": "echo", "user": "ada",
    })  # fmt: skip
    assert job["state"] in ("queued", "starting", "running")
    assert set(job) >= {
        "id", "name", "user", "state", "priority", "resources", "depends_on", "template", "params",
        "attempts", "max_retries", "progress", "mlflow", "created", "started", "ended",
    }  # fmt: skip
    logs = {"lines": [], "next": 0, "finished": False}
    text: list[str] = []
    while not logs["finished"]:
        logs = await _json(jp_fetch, "jobs", job["id"], "logs", after=logs["next"], wait=5)
        text += [line["text"] for line in logs["lines"]]
    assert text == ["one", "two"]
    done = await _json(jp_fetch, "jobs", job["id"])
    assert done["state"] == "succeeded" and done["attempts"][0]["exit_code"] == 0
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

    listing = await _json(jp_fetch, "jobs", user="ada")
    assert [j["id"] for j in listing["jobs"]] == [job["id"]] and listing["total"] == 1
    cluster = await _json(jp_fetch, "cluster")
    assert cluster["gpus"]["total"] == 1 and len(cluster["workers"]) == 1
    templates = await _json(jp_fetch, "templates")
    assert {"python-cell", "command", "torch"} <= {t["name"] for t in templates["templates"]}
    events = await _json(jp_fetch, "events", after=0)
    assert any(c["job_id"] == job["id"] and c.get("state") == "succeeded" for c in events["changes"])
    metrics = await jp_fetch("trainorch", "metrics")
    assert b'trainorch_jobs{state="succeeded"} 1' in metrics.body


async def test_user_errors_are_one_sentence_with_the_right_status(jp_fetch, jp_serverapp):
    cases = [
        ({"template": "nope"}, 400, "unknown template 'nope'"),
        ({"template": "command", "params": {}}, 400, "no param 'cmd' is set"),
        ({"template": "command", "params": {"cmd": "x"}, "overrides": {"gpus": 16}}, 400, "16 GPUs"),
        ({"template": "command", "params": {"cmd": "x"}, "overrides": {"priority": "asap"}}, 400, "priority"),
        ({"spec": {"name": "x", "kind": "python", "bogus": 1}}, 400, "bogus is not a known job field"),
        ({}, 400, "either spec or template"),
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

    changed = await _json(jp_fetch, "jobs", waiting["id"], method="PATCH", body={"priority": "urgent"})
    assert (changed["priority"], changed["priority_class"], changed["state"]) == (300, "urgent", "queued")
    assert changed["spec"]["command"] == "echo hi"  # the detail carries the rendered spec
    code, message = await _error(jp_fetch, "jobs", blocker["id"], method="PATCH", body={"priority": "high"})
    assert code == 409 and "only a job that has not started can change priority" in message
    code, message = await _error(jp_fetch, "jobs", waiting["id"], method="PATCH", body={"gpus": 2})
    assert code == 400 and message.startswith("only priority can be changed")

    await _json(jp_fetch, "jobs", blocker["id"], method="DELETE")
    while not any(c["job_id"] == waiting["id"] and c.get("state") == "succeeded" for c in seen):
        seen.append(json.loads(await socket.read_message()))
    assert any(c["job_id"] == waiting["id"] and c["kind"] == "logs" for c in seen)
    socket.close()
