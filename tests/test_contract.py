"""The one contract: the OpenAPI document is current, real answers have exactly its shapes,
and hostile or careless input is a 4xx sentence (never a 5xx, a hang or invalid JSON)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from conftest import service_process, stop_services_under, wait_until
from pydantic import TypeAdapter

from jupyter_trainorch.contract import jobs, openapi, service

SECRET = "s3cr3t-value-42"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A real ``trainorch serve`` with one local worker (two GPU slots) and templates."""
    root = tmp_path_factory.mktemp("contract")
    templates = root / "templates"
    templates.mkdir()
    (templates / "aliases.yaml").write_text(_ALIAS_BOMB)
    (templates / "escape.yaml").write_text(
        "version: 1\nkind: command\ncommand: cat x\ninputs: [/etc/passwd]\n"
    )
    server = service_process(root)
    server.env["TRAINORCH_TEMPLATE_PATH"] = str(templates)
    server.env["TRAINORCH_GPUS_PER_WORKER"] = "2"
    server.start()
    yield server
    server.stop()
    stop_services_under(root)


_ALIAS_BOMB = "version: 1\nparams:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def call(api, method: str, path: str, body: object = None, raw: bytes | None = None, **headers):
    """(status, decoded JSON) of a request to the service; every answer must be strict JSON."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(api.url + "trainorch/api/" + path, data=data, method=method)
    request.add_header("Authorization", f"token {api.token}")
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()

    def refuse(constant: str) -> None:
        raise AssertionError(f"{method} {path} answered {constant}, which is not JSON")

    return status, json.loads(text, parse_constant=refuse) if text else None


def test_the_checked_in_openapi_document_is_current():
    assert openapi.CHECKED_IN.read_text() == openapi.text(), (
        "run: python -m jupyter_trainorch.contract.openapi --write"
    )
    document = json.loads(openapi.text())
    assert document["openapi"] == "3.1.0"
    states = document["components"]["schemas"]["JobState"]["enum"]
    assert states == ["pending", "queued", "starting", "running", "retrying", "preempted",
                      "succeeded", "failed", "cancelled"]  # fmt: skip


def test_the_service_serves_its_document(api):
    status, document = call(api, "GET", "openapi.json")
    assert status == 200 and document == json.loads(openapi.CHECKED_IN.read_text())


BAD_SUBMITS = [
    ({"spec": {"name": "x", "resources": "lots"}}, "spec.resources must be a mapping"),
    ({"spec": {"name": "x", "priority": 2**70}}, "spec.priority must be between"),
    ({"spec": {"name": "x", "resources": {"memory": "NaN"}}}, "spec.resources.memory must be"),
    ({"spec": {"name": "x", "resources": {"gpus": 1e300}}}, "spec.resources.gpus must be"),
    ({"spec": {"name": "x", "timeout": 1e300}}, "spec.timeout must be a duration"),
    ({"spec": {"name": "x", "outputs": 5}}, "spec.outputs must be a list"),
    ({"spec": {"name": "x", "workdir": {}}}, "spec.workdir must be a string"),
    ({"spec": {"name": "a\x00b"}}, "spec.name must not contain control characters"),
    ({"spec": {"name": "x", "env": {"A=B": "1"}}}, "spec.env has the name 'A=B'"),
    ({"spec": {"name": "x", "env": {"A": "a\x00"}}}, "spec.env variable A must be"),
    ({"spec": {"name": "x" * 128 * 1024}}, "spec.name must be at most 200 characters"),
    ({"spec": {"name": "x", "params": {"deep": [[[[[]]]]] * 2 * 10**5}}}, "spec.params must be at"),
    ({"spec": {"name": "x", "depends_on": ["../../etc"]}}, "spec.depends_on.0 must be a job id"),
    ({"spec": {"name": "x"}, "package": "not base64!"}, "package must be base64"),
    ({"template": "command", "params": {"cmd": "x"}, "name": "{{ 'x' * 10**7 }}"}, "name builds"),
    (
        {"template": "command", "params": {"cmd": "x"}, "name": "{{ 2**99999999 }}"},
        "name uses a number that is too large",
    ),
    (
        {
            "template": "command",
            "params": {"cmd": "x"},
            "name": "{% for a in range(99999) %}"
            "{% for b in range(99999) %}{% endfor %}{% endfor %}x",
        },
        "name took longer than 2 s",
    ),
    (
        {"spec": {"name": "x"}, "package": base64.b64encode(b"no zip").decode()},
        "package must be a zip archive",
    ),
    ({"template": "command", "params": {"cmd": "x"}, "overrides": {"gpus": "lots"}}, "--gpus"),
    (
        {"template": "command", "params": {"cmd": "x"}, "overrides": {"priority": 2**70}},
        "--priority",
    ),
    ({"template": 5}, "template must be a string"),
    ({"spec": {"name": "x"}, "bogus": 1}, "bogus is not a known field"),
    ([1, 2], "the request body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_SUBMITS, ids=range(len(BAD_SUBMITS)))
def test_bad_submissions_are_one_sentence_400s(api, body, fragment):
    status, answer = call(api, "POST", "jobs", body)
    assert status == 400, answer
    assert set(answer) == {"message", "reason"} and fragment in answer["message"], answer
    assert "\n" not in answer["message"] and "Traceback" not in answer["message"]


@pytest.mark.parametrize(
    "raw", [b'{"spec": {"name": "x", "timeout": Infinity}}', b"{nope", b"\xff"]
)
def test_bodies_that_are_not_json_are_refused(api, raw):
    status, answer = call(api, "POST", "jobs", raw=raw)
    assert status == 400 and answer["message"] == "the request body is not valid JSON"


def test_a_yaml_alias_bomb_and_an_escaping_input_are_template_errors_not_hangs(api):
    started = time.monotonic()
    status, answer = call(api, "GET", "templates")
    assert status == 200 and time.monotonic() - started < 5
    errors = {Path(path).name: text for path, text in answer["errors"].items()}
    assert "too many nested YAML aliases" in errors["aliases.yaml"]
    assert "must be a path inside the template's folder" in errors["escape.yaml"]
    TypeAdapter(service.TemplateList).validate_python(answer, strict=False)


def test_answers_have_exactly_the_contract_shapes(api):
    spec = {"name": "shape", "kind": "command", "command": "echo hello", "env": {"PLAIN": "1"}}
    status, job = call(api, "POST", "jobs", {"spec": spec}, Idempotency_Key="shape-1")
    assert status == 201
    jobs.Job.model_validate(job)
    assert job["terminal"] is False and job["attempts_allowed"] == 1
    assert "cancel" in job["actions"] and job["created"].endswith("Z")
    done = wait_until(
        lambda: (lambda a: a if a["terminal"] else None)(call(api, "GET", f"jobs/{job['id']}")[1]),
        what="the job to end",
    )
    jobs.Job.model_validate(done)
    assert done["spec"]["env"] == {"PLAIN": "1"} and done["attempts"][0]["ended"].endswith("Z")
    for path, model in [
        ("jobs", jobs.JobList),
        (f"jobs/{job['id']}/logs", jobs.LogPage),
        ("cluster", service.Cluster),
        ("me", service.Me),
        ("service", service.ServiceStatus),
        ("events?after=0&timeout=0", service.ChangePage),
    ]:
        status, answer = call(api, "GET", path)
        assert status == 200, (path, answer)
        model.model_validate(answer)
    _, page = call(api, "GET", "events?after=0&timeout=0")
    assert all(change["time"].endswith("Z") for change in page["changes"])


def test_secret_env_reaches_the_job_and_is_never_returned(api):
    spec = {
        "name": "secretive", "kind": "command", "command": "echo token=$API_KEY; echo plain=$PLAIN",
        "env": {"PLAIN": "visible"}, "secret_env": {"API_KEY": SECRET},
    }  # fmt: skip
    status, job = call(api, "POST", "jobs", {"spec": spec})
    assert status == 201 and SECRET not in json.dumps(job)
    wait_until(lambda: call(api, "GET", f"jobs/{job['id']}")[1]["terminal"], what="the job")
    _, done = call(api, "GET", f"jobs/{job['id']}")
    assert done["state"] == "succeeded" and done["spec"]["secret_env"] == {"API_KEY": "***"}
    _, logs = call(api, "GET", f"jobs/{job['id']}/logs")
    texts = [line["text"] for line in logs["lines"]]
    assert texts == ["token=***", "plain=visible"]
    _, listing = call(api, "GET", "jobs")
    _, changes = call(api, "GET", "events?after=0&timeout=0")
    assert SECRET not in json.dumps([done, logs, listing, changes])


def test_queries_and_other_bodies_are_checked_at_the_edge(api):
    for path, fragment in [
        ("jobs?limit=0", "limit must be a whole number from 1 to 1000"),
        ("jobs?offset=1e20", "offset must be a whole number"),
        ("jobs?state=sleeping", "state must be one of"),
        ("events?timeout=nan", "timeout must be a number of seconds from 0 to 60"),
        ("events?after=-5", "after must be a whole number"),
        ("jobs/nope/logs?wait=inf", "wait must be a number of seconds from 0 to 60"),
    ]:
        status, answer = call(api, "GET", path)
        assert status == 400 and answer["message"].startswith(fragment), (path, answer)
    status, answer = call(api, "POST", "service/stop", {"force": "yes please"})
    assert status == 400 and answer["message"].startswith("force must be true or false")
    status, answer = call(api, "PATCH", "jobs/nope", {"priority": 2**70})
    assert status in (400, 404) and "\n" not in answer["message"]


def test_a_body_over_the_cap_is_refused_without_being_read(api):
    from jupyter_trainorch.contract.limits import MAX_REQUEST_BYTES

    request = urllib.request.Request(api.url + "trainorch/api/jobs", method="POST",
                                     data=b"x" * 1024)  # fmt: skip
    request.add_header("Authorization", f"token {api.token}")
    request.add_header("Content-Length", str(MAX_REQUEST_BYTES + 1))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (ConnectionError, urllib.error.URLError):
        status = "closed"  # tornado may answer by closing the connection
    assert status in (400, 413, "closed")
    assert call(api, "GET", "me")[0] == 200


def test_a_waiting_job_says_why(api):
    def submit(name, gpus=0, after=(), command="sleep 30"):
        spec = {"name": name, "kind": "command", "command": command,
                "resources": {"gpus": gpus}, "depends_on": list(after)}  # fmt: skip
        status, job = call(api, "POST", "jobs", {"spec": spec})
        assert status == 201, job
        return job["id"]

    holder = submit("holder", gpus=2)
    wait_until(lambda: call(api, "GET", f"jobs/{holder}")[1]["state"] == "running", what="run")
    big, small = submit("big", gpus=2), submit("small", gpus=1)
    later = submit("later", after=[holder], command="true")
    try:
        views = {job_id: call(api, "GET", f"jobs/{job_id}")[1] for job_id in (big, small, later)}
        assert views[big]["queue_position"] == 1
        assert views[big]["wait_reason"].startswith("needs 2 GPUs and 1 CPU, which no worker has")
        assert "is held for it and it starts there next" in views[big]["wait_reason"]
        assert views[small]["wait_reason"].startswith(
            "behind 1 job that goes first; every worker is busy or held"
        )
        assert f"for {big})" in views[small]["wait_reason"]
        assert (
            views[later]["wait_reason"] == f"waiting for dependency {holder} (running) to succeed"
        )
        listed = {j["id"]: j for j in call(api, "GET", "jobs")[1]["jobs"]}
        assert listed[small]["wait_reason"] == views[small]["wait_reason"]
    finally:
        for job_id in (later, small, big, holder):
            call(api, "DELETE", f"jobs/{job_id}")


def test_jobs_can_be_searched_and_sorted_in_dispatch_order(api):
    ids = {}
    for name, priority in [("sweep-lr-a", "low"), ("sweep-lr-b", "urgent"), ("other", "high")]:
        spec = {"name": name, "kind": "command", "command": "true", "priority": priority}
        status, job = call(api, "POST", "jobs", {"spec": spec})
        assert status == 201, job
        ids[name] = job["id"]
    status, page = call(api, "GET", "jobs?q=SWEEP-LR&sort=priority")
    assert status == 200
    names = [job["name"] for job in page["jobs"]]
    assert names[:2] == ["sweep-lr-b", "sweep-lr-a"] and "other" not in names
    assert page["total"] == len(page["jobs"]) >= 2
    _, by_id = call(api, "GET", f"jobs?q={ids['other'][:6]}")
    assert [job["id"] for job in by_id["jobs"]] == [ids["other"]]
    _, oldest = call(api, "GET", "jobs?q=sweep-lr&sort=oldest")
    assert [job["name"] for job in oldest["jobs"]][-2:] == ["sweep-lr-a", "sweep-lr-b"]
    status, answer = call(api, "GET", "jobs?sort=fastest")
    assert status == 400 and answer["message"].startswith(
        "sort must be one of newest, oldest, priority"
    )
    _, literal = call(api, "GET", "jobs?q=%25")  # a % is a character to find, not a wildcard
    assert literal["total"] == 0


def test_every_route_the_service_answers_is_in_the_document():
    import re

    from jupyter_trainorch.api.handlers import ROUTES

    served = {
        openapi.API + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path)
        for path, _handler in ROUTES
        if not path.endswith("/ws")  # the websocket is no REST operation
    }
    documented = {op.path for op in openapi.OPERATIONS} - {"/trainorch/metrics"}
    assert served == documented


def test_queued_jobs_get_an_expected_start_from_past_runs(api):
    def submit(name, command, gpus=2):
        spec = {"name": name, "kind": "command", "command": command, "resources": {"gpus": gpus}}
        status, job = call(api, "POST", "jobs", {"spec": spec})
        assert status == 201, job
        return job["id"]

    def seconds(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    def state(job_id):
        return call(api, "GET", f"jobs/{job_id}")[1]["state"]

    for _ in range(2):  # the history: "tick" runs about 2 s
        done = submit("tick", "sleep 2")
        wait_until(lambda done=done: state(done) == "succeeded", timeout=60, what="tick")
    holder = submit("tick", "sleep 30")
    wait_until(lambda: state(holder) == "running", what="run")
    waiter, unknown, behind = submit("tick", "true"), submit("new", "true"), submit("new", "true")
    try:
        time.sleep(3.5)  # past the forecast's cache
        now = time.time()
        views = {
            job_id: call(api, "GET", f"jobs/{job_id}")[1]
            for job_id in (holder, waiter, unknown, behind)
        }
        # The holder is expected to end about 2 s after it started (never in the past), the
        # waiter to start then, and "new" after the waiter's 2 s; what comes after a job of
        # unknown run time has no estimate.
        end = seconds(views[holder]["estimated_end"])
        assert now < end < now + 10
        assert seconds(views[waiter]["estimated_start"]) == pytest.approx(end, abs=0.01)
        assert seconds(views[unknown]["estimated_start"]) == pytest.approx(end + 2, abs=1)
        assert views[behind].get("estimated_start") is None
        assert views[behind]["wait_reason"]
    finally:
        for job_id in (behind, unknown, waiter, holder):
            call(api, "DELETE", f"jobs/{job_id}")
