"""Dependencies: the conditions (ok, any, notok), groups submitted together, upstream
``--out`` values in a downstream job, and conditions kept across a restart."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from conftest import service_process, start_host, stop_services_under, wait_final, wait_until

from jupyter_trainorch.orchestrator.access import Caller, Forbidden
from jupyter_trainorch.orchestrator.dependencies import check_group
from jupyter_trainorch.orchestrator.jobservice import JobService
from jupyter_trainorch.settings import TrainOrch
from jupyter_trainorch.spec import JobSpec, SpecError, TemplateRegistry, render_spec
from jupyter_trainorch.spec.dependencies import MET, NEVER, WAIT, find_cycle, group_order, verdict

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)


# -- pure logic -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("when", "state", "expected"),
    [
        ("ok", "running", WAIT), ("ok", "succeeded", MET), ("ok", "failed", NEVER),
        ("ok", "cancelled", NEVER), ("any", "pending", WAIT), ("any", "succeeded", MET),
        ("any", "failed", MET), ("any", "cancelled", MET), ("notok", "queued", WAIT),
        ("notok", "succeeded", NEVER), ("notok", "failed", MET), ("notok", "cancelled", MET),
        ("notok", "retrying", WAIT),
    ],
)  # fmt: skip
def test_a_condition_decides_by_the_dependency_s_end(when, state, expected):
    assert verdict(when, state) == expected


def test_cycles_are_found_and_groups_ordered():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["x"], "b": ["a"]}) is None  # x is outside the group
    assert group_order({"eval": ["train"], "train": ["prep"], "prep": [], "x": []}) == [
        "prep", "train", "eval", "x",
    ]  # fmt: skip
    chain = {f"j{i}": [f"j{i + 1}"] for i in range(5000)} | {"j5000": []}
    assert find_cycle(chain) is None  # no recursion limit on a long chain
    with pytest.raises(SpecError, match=r"^the jobs' dependencies form a cycle: a -> b -> a$"):
        group_order({"a": ["b"], "b": ["a"]})


def test_a_group_needs_unique_names_and_no_cycle():
    def spec(name, *after, **conditions):
        deps = [{"job": job, "when": when} for job, when in conditions.items()]
        return JobSpec(name=name, depends_on=list(after), dependencies=deps)

    assert check_group([spec("c", "b"), spec("b", "a"), spec("a")]) == [2, 1, 0]
    with pytest.raises(SpecError, match=r"jobs\[1\].name 'a' is also the name of jobs\[0\]"):
        check_group([spec("a"), spec("a")])
    with pytest.raises(SpecError, match="cycle: a -> b -> a"):
        check_group([spec("a", "b"), spec("b", **{"a": "any"})])


def test_conditions_merge_depends_on_and_dependencies():
    spec = JobSpec(name="x", depends_on=["a", "b"], dependencies=["c", {"job": "b", "when": "any"}])
    assert [(d.job, d.when) for d in spec.conditions()] == [("c", "ok"), ("b", "any"), ("a", "ok")]
    assert JobSpec.from_dict(spec.to_dict()).conditions() == spec.conditions()
    with pytest.raises(SpecError, match=r"dependencies\.0\.when must be 'ok', 'any' or 'notok'"):
        JobSpec.from_dict({"name": "x", "dependencies": [{"job": "a", "when": "maybe"}]})


def test_templates_take_depends_on_as_names_or_job_and_when(tmp_path):
    (tmp_path / "evaluate.yaml").write_text(
        "version: 1\nkind: command\ncommand: echo hi\n"
        "depends_on:\n  - prep\n  - {job: train, when: any}\n"
    )
    (tmp_path / "bad.yaml").write_text(
        "version: 1\nkind: command\ncommand: echo\ndepends_on: [{job: t, when: later}]\n"
    )
    registry = TemplateRegistry([tmp_path])
    spec = render_spec(registry.get("evaluate"), dependencies=[{"job": "prep", "when": "notok"}])
    assert [(d.job, d.when) for d in spec.conditions()] == [("prep", "notok"), ("train", "any")]
    assert (
        "depends_on[0].when must be 'ok', 'any' or 'notok'"
        in registry.errors[str(tmp_path / "bad.yaml")]
    )


# -- on a real orchestrator (through JobService, as the REST handlers call it) -------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("deps")
    config = TrainOrch(
        data_dir=str(root), workers=1, gpus_per_worker=1, slots_per_worker=4, mlflow="off"
    ).to_config()
    service = JobService(config)
    yield service
    service.stop(detach=False)
    stop_services_under(root)


def _submit(service, caller, name, source="print('hi')", **spec):
    job, _ = service.submit(caller, {"spec": {"name": name, "source": source, **spec}})
    return job


def _final(service, caller, job_id, timeout=60):
    return wait_until(
        lambda: (j := service.get(caller, job_id))["terminal"] and j, timeout, f"{job_id} to end"
    )


def test_afterany_runs_after_a_failure_and_afternotok_only_after_one(shared):
    broken = _submit(shared, ALICE, "broken", "raise SystemExit(3)")
    fine = _submit(shared, ALICE, "fine")
    cleanup = _submit(shared, ALICE, "cleanup", dependencies=[{"job": "broken", "when": "any"}])
    rescue = _submit(shared, ALICE, "rescue", dependencies=[{"job": broken["id"], "when": "notok"}])
    skipped = _submit(shared, ALICE, "skipped", dependencies=[{"job": fine["id"], "when": "notok"}])
    assert cleanup["state"] == "pending" and cleanup["depends_on"] == [broken["id"]]
    assert cleanup["dependencies"] == [{"job_id": broken["id"], "when": "any"}]
    assert cleanup["wait_reason"].endswith("to end")
    assert _final(shared, ALICE, cleanup["id"])["state"] == "succeeded"
    assert _final(shared, ALICE, rescue["id"])["state"] == "succeeded"
    ended = _final(shared, ALICE, skipped["id"])
    assert ended["state"] == "cancelled" and not ended["attempts"]
    assert ended["error"] == (
        f"it was to run only if dependency {fine['id']} failed or was cancelled, and it succeeded"
    )
    # A dependency that has already ended the other way is refused at once.
    with pytest.raises(SpecError, match=r"^--after-notok: job \w+ \(fine\) has already succeeded"):
        _submit(shared, ALICE, "late", dependencies=[{"job": "fine", "when": "notok"}])
    after_end = _submit(shared, ALICE, "after-end", dependencies=[{"job": "fine", "when": "any"}])
    assert _final(shared, ALICE, after_end["id"])["state"] == "succeeded"


def test_a_job_may_not_wait_on_another_user_s_job(shared):
    theirs = _submit(shared, BOB, "bobs")
    with pytest.raises(Forbidden, match=rf"^--after: job {theirs['id']} belongs to bob"):
        _submit(shared, ALICE, "nosy", depends_on=[theirs["id"]])
    # A name finds only the caller's own jobs.
    with pytest.raises(SpecError, match="there is no job with id or name 'bobs'"):
        _submit(shared, ALICE, "nosy", depends_on=["bobs"])
    assert _submit(shared, ADMIN, "admin", depends_on=[theirs["id"]])["depends_on"] == [
        theirs["id"]
    ]


UPSTREAM = """
import jupyter_trainorch as t
prep = t.upstream("prep")
data = prep.result()["data"]
total = sum(data) + t.upstream("other").result()["extra"]
print("upstream", prep.name, prep.state, len(t.upstreams()), total, flush=True)
"""


def test_a_group_passes_outputs_downstream_and_is_all_or_none(shared):
    group = {
        "jobs": [
            {"spec": {"name": "sum", "source": UPSTREAM, "outputs": ["total"],
                      "depends_on": ["prep"], "dependencies": [{"job": "other", "when": "any"}]}},
            {"spec": {"name": "prep", "source": "data = list(range(5))", "outputs": ["data"]}},
            {"spec": {"name": "other", "source": "extra = 100", "outputs": ["extra"]}},
        ]
    }  # fmt: skip
    answer, created = shared.submit_batch(ALICE, group, "group-key-1")
    assert created and [j["name"] for j in answer["jobs"]] == ["sum", "prep", "other"]
    total, prep, other = (j["id"] for j in answer["jobs"])
    assert answer["jobs"][0]["depends_on"] == [other, prep]
    done = _final(shared, ALICE, total)
    assert done["state"] == "succeeded", asyncio_logs(shared, total)
    import cloudpickle

    assert cloudpickle.loads(shared.outputs(ALICE, total)) == {"total": 110}
    assert "upstream prep succeeded 2 110" in asyncio_logs(shared, total)
    # The same key and body: the same jobs, not new ones.
    again, created = shared.submit_batch(ALICE, group, "group-key-1")
    assert not created and [j["id"] for j in again["jobs"]] == [total, prep, other]

    before = shared.store.count_jobs()
    cyclic = {"jobs": [{"spec": {"name": "a", "depends_on": ["b"]}},
                       {"spec": {"name": "b", "dependencies": [{"job": "a", "when": "notok"}]}},
                       {"spec": {"name": "c"}}]}  # fmt: skip
    with pytest.raises(SpecError, match=r"^the jobs' dependencies form a cycle: a -> b -> a$"):
        shared.submit_batch(ALICE, cyclic)
    unknown = {"jobs": [{"spec": {"name": "a"}}, {"spec": {"name": "b", "depends_on": ["zz"]}}]}
    with pytest.raises(SpecError, match=r"^jobs\[1\] \(b\): --after: there is no job .* 'zz'$"):
        shared.submit_batch(ALICE, unknown)
    with pytest.raises(SpecError, match=r"^jobs must have at most 100 items$"):
        shared.submit_batch(ALICE, {"jobs": [{"spec": {"name": f"j{i}"}} for i in range(101)]})
    assert shared.store.count_jobs() == before  # none of them was made


def asyncio_logs(service, job_id):
    import asyncio

    page = asyncio.run(service.logs(ALICE, job_id))
    return "\n".join(line["text"] for line in page["lines"])


def test_a_restarted_orchestrator_honours_the_conditions(tmp_path):
    gate = tmp_path / "gate"
    hold = f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"
    host = start_host(tmp_path / "data", mlflow="off")
    try:
        first = host.call(lambda o: o.submit(JobSpec(name="first", source=hold))).id
        spec = JobSpec(name="on-failure", dependencies=[{"job": first, "when": "notok"}])
        waiting = host.call(lambda o: o.submit(spec)).id
        wait_until(lambda: host.store.get_job(first).state == "running", what="first to run")
    finally:
        host.stop()  # the running job goes back to the queue, the other stays pending
    assert host.store.get_job(waiting).state == "pending"
    gate.write_text("go")
    host = start_host(tmp_path / "data", mlflow="off")
    try:
        assert wait_final(host, first).state == "succeeded"
        job = wait_final(host, waiting)
        assert job.state == "cancelled" and "only if dependency" in job.error
    finally:
        host.stop()


# -- over REST -------------------------------------------------------------------------
def test_the_batch_route_creates_a_group_or_answers_one_sentence(tmp_path):
    server = service_process(tmp_path)
    server.start()
    try:

        def post(body):
            request = urllib.request.Request(
                server.url + "trainorch/api/jobs/batch", data=json.dumps(body).encode(),
                method="POST", headers={"Authorization": f"token {server.token}"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        cmd = {"template": "command", "params": {"cmd": "true"}}
        status, answer = post({"jobs": [{**cmd, "name": "x", "depends_on": ["y"]},
                                         {**cmd, "name": "y", "depends_on": ["x"]}]})  # fmt: skip
        assert status == 400 and answer["message"] == (
            "the jobs' dependencies form a cycle: x -> y -> x"
        )
        status, answer = post({"jobs": [{**cmd, "name": "first"},
                                        {**cmd, "name": "then", "dependencies": [
                                            {"job": "first", "when": "any"}]}]})  # fmt: skip
        assert status == 201, answer
        first, then = answer["jobs"]
        assert then["state"] == "pending" and then["dependencies"] == [
            {"job_id": first["id"], "when": "any"}
        ]
    finally:
        server.stop()


# -- the notebook surface --------------------------------------------------------------
def test_train_magic_flags_become_conditions():
    from jupyter_trainorch.client.magics import build_request

    body, _, _ = build_request("--after a --after-any b,c --after-notok d", "x = 1", 3)
    assert body["depends_on"] == ["a"]
    assert body["dependencies"] == [
        {"job": "b", "when": "any"}, {"job": "c", "when": "any"}, {"job": "d", "when": "notok"},
    ]  # fmt: skip


def test_pipeline_steps_are_checked_with_one_sentence():
    from jupyter_trainorch import Pipeline, Step

    with pytest.raises(ValueError, match=r"^step 'a': give either source \(Python\) or command$"):
        Step("a")
    with pytest.raises(ValueError, match=r"^step 'a': out takes variable names, and '1x' is not"):
        Step("a", "x = 1", out="1x")
    with pytest.raises(ValueError, match=r"^step 'a': gpu is not a step option"):
        Step("a", "x = 1", gpu=1)
    with pytest.raises(ValueError, match=r"^two steps are named 'a'"):
        Pipeline([Step("a", "x = 1"), Step("a", "y = 2")])
    with pytest.raises(ValueError, match=r"^the steps' dependencies form a cycle: a -> b -> a$"):
        Pipeline([Step("a", "pass", after="b"), Step("b", "pass", after_notok="a")])
    pipeline = Pipeline([Step("prep", "data = [factor]", out="data", variables={"factor": 3}),
                         Step("fit", command="echo fit", after_any="prep", gpus=1)])  # fmt: skip
    assert repr(pipeline) == "<Pipeline of 2 steps: <Step prep -> data>, <Step fit after prep>>"
    body, package = pipeline.steps[0].request("g1")
    assert body["outputs"] == ["data"] and body["group"] == "g1" and package
    from jupyter_trainorch.package import read_package

    assert set(read_package(package)[0]) == {"factor"}  # the step's free variable went along
    body, package = pipeline.steps[1].request("g1")
    assert (
        package is None and body["template"] == "command" and body["params"] == {"cmd": "echo fit"}
    )
    assert body["dependencies"] == [{"job": "prep", "when": "any"}]
    assert body["overrides"] == {"gpus": 1}


def test_upstream_outside_a_job_says_so(monkeypatch):
    import jupyter_trainorch
    from jupyter_trainorch.upstream import UpstreamError

    monkeypatch.delenv("TRAINORCH_UPSTREAM_DIR", raising=False)
    with pytest.raises(UpstreamError, match="works inside a job that waits on other jobs"):
        jupyter_trainorch.upstream("train")


def test_upstream_values_are_bounded_and_carry_no_environment(tmp_path):
    import cloudpickle

    from jupyter_trainorch.orchestrator.upstream import upstream_jobs
    from jupyter_trainorch.store import JobRecord, JobStore

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    for job_id, size in (("small", 10), ("big", 5000)):
        spec = {"name": job_id, "outputs": ["x"], "env": {"A": "1"}, "secret_env": {"S": "hush"}}
        store.create_job(JobRecord(job_id, 0, job_id, "alice", "succeeded", 100, spec), None)
        store.update_job(job_id, outputs=cloudpickle.dumps({"x": "y" * size}), has_outputs=True)
    spec = {"name": "down", "dependencies": [{"job": "small", "when": "ok"},
                                             {"job": "big", "when": "any"}]}  # fmt: skip
    down = JobRecord("down", 0, "down", "alice", "queued", 100, spec, depends_on=["small", "big"])
    small, big = upstream_jobs(store, down, lambda job_id: tmp_path / job_id, budget=1000)
    assert cloudpickle.loads(small["outputs"]) == {"x": "y" * 10} and small["when"] == "ok"
    assert big["outputs"] is None and big["when"] == "any"
    assert big["outputs_note"] == "its --out values are too large, over what is passed to a job"
    assert "hush" not in json.dumps({**small, "outputs": None}) + json.dumps(big)
    assert not {"env", "secret_env", "spec"} & set(small)
    store.close()
