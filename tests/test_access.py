"""Who may see and do what: owners, admins and everyone else, on a real orchestrator; and
what a job's process may see of the service that started it."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import service_process, stop_services_under, wait_until

from jupyter_trainorch.client.transport import HTTPTransport
from jupyter_trainorch.orchestrator.access import Caller, Forbidden
from jupyter_trainorch.orchestrator.errors import JobNotFound
from jupyter_trainorch.orchestrator.jobservice import JobService
from jupyter_trainorch.settings import TrainOrch

ALICE, BOB, ADMIN = Caller("alice"), Caller("bob"), Caller("root", admin=True)
HOLD = "import time\nprint('working', flush=True)\ntime.sleep(60)"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service for three users, as a hub deployment has (the caller comes from its
    authentication, given here directly)."""
    root = tmp_path_factory.mktemp("shared")
    config = TrainOrch(data_dir=str(root), workers=1, gpus_per_worker=1, mlflow="off").to_config()
    service = JobService(config)
    yield service
    service.stop(detach=False)
    stop_services_under(root)


def _submit(service: JobService, caller: Caller, name: str, source: str = "print('hi')", **spec):
    body = {"spec": {"name": name, "kind": "python", "source": source, **spec}}
    job, created = service.submit(caller, body)
    assert created
    return job


def test_a_job_belongs_to_who_submitted_it_whatever_the_body_says(shared):
    job = _submit(shared, ALICE, "mine", user="bob")
    assert job["user"] == "alice" and set(job["actions"]) >= {"read", "cancel", "rerun"}


def test_others_see_a_queue_row_and_get_403_on_everything_else(shared):
    job = _submit(shared, ALICE, "private", source=HOLD, resources={"gpus": 1})
    queued = _submit(shared, ALICE, "queued-behind", resources={"gpus": 1})
    row = shared.get(BOB, queued["id"])
    assert row["restricted"] and row["actions"] == [] and row["user"] == "alice"
    assert row["state"] == "queued" and row["queue_position"] == 1
    assert not {"spec", "params", "attempts", "progress", "mlflow", "error"} & set(row)
    listed = {j["id"]: j for j in shared.list(BOB)["jobs"]}
    assert listed[job["id"]].get("restricted") and "attempts" not in listed[job["id"]]
    target = job["id"]
    for action, what in (
        (lambda: asyncio.run(shared.logs(BOB, target)), "read its logs"),
        (lambda: shared.package(BOB, target), "download its code package"),
        (lambda: shared.outputs(BOB, target), "read its outputs"),
        (lambda: shared.metric_history(BOB, target), "read its metrics"),
        (lambda: shared.cancel(BOB, target), "cancel it"),
        (lambda: shared.retry(BOB, target), "retry it"),
        (lambda: shared.rerun(BOB, target), "rerun it"),
        (lambda: shared.update(BOB, target, {"priority": "urgent"}), "change its priority"),
    ):
        with pytest.raises(Forbidden) as err:
            action()
        assert (
            str(err.value) == f"job {target} belongs to alice; only its owner and admins may {what}"
        )
    # Bob's view of the change feed has no progress or log changes of Alice's jobs.
    wait_until(
        lambda: asyncio.run(shared.logs(ALICE, job["id"]))["lines"], what="alice's job to print"
    )
    feed = asyncio.run(shared.events(BOB, after=0))["changes"]
    assert feed and all(c["kind"] == "job" for c in feed if c["user"] == "alice")
    assert any(c["kind"] == "logs" for c in asyncio.run(shared.events(ALICE, after=0))["changes"])
    # An admin may act on it.
    assert asyncio.run(shared.logs(ADMIN, job["id"]))["lines"][0]["text"] == "working"
    assert shared.cancel(ADMIN, job["id"])["id"] == job["id"]
    wait_until(lambda: shared.get(ALICE, job["id"])["state"] == "cancelled", what="the cancel")
    assert shared.rerun(ADMIN, queued["id"])["user"] == "root"  # a rerun belongs to who asked


def test_hidden_mode_shows_nothing_of_other_users(shared):
    job = _submit(shared, ALICE, "hidden")
    shared.others_jobs = "hidden"
    try:
        with pytest.raises(JobNotFound):
            shared.get(BOB, job["id"])
        with pytest.raises(JobNotFound):
            asyncio.run(shared.logs(BOB, job["id"]))
        assert all(j["user"] == "bob" for j in shared.list(BOB)["jobs"])
        assert shared.list(BOB, user="alice")["total"] == 0
        assert not [
            c for c in asyncio.run(shared.events(BOB, after=0))["changes"] if c["user"] == "alice"
        ]
        assert shared.me(BOB, "hub")["may"]["see_others_jobs"] is False
        assert shared.get(ADMIN, job["id"])["user"] == "alice"
    finally:
        shared.others_jobs = "queue"


def test_a_job_never_sees_the_services_credentials(tmp_path):
    service = service_process(tmp_path)
    secrets = {
        "TRAINORCH_TOKEN": "trainorch-secret", "JUPYTERHUB_API_TOKEN": "hub-secret",
        "JPY_API_TOKEN": "jpy-secret", "JUPYTER_TOKEN": "jupyter-secret",
        "TRAINORCH_DB": f"sqlite:///{tmp_path / 'data' / 'trainorch.db'}",
    }  # fmt: skip
    service.env.update(secrets)
    try:
        service.start()
        client = HTTPTransport(service.url, service.token)
        probe = (
            "import json, os\n"
            "print(json.dumps({k: v for k, v in os.environ.items() if 'TOKEN' in k or 'secret' in v\n"
            "                  or k.startswith(('TRAINORCH_', 'JUPYTERHUB_', 'JPY_'))}))"
        )
        job = client.submit({"template": "python-cell", "source": probe, "name": "probe"})
        assert client.wait(job["id"], timeout=90)["state"] == "succeeded"
        seen = json.loads(client.logs(job["id"])["lines"][0]["text"])
    finally:
        service.stop()
        stop_services_under(tmp_path)
    assert not any(value in secrets.values() for value in seen.values()), seen
    assert sorted(seen) == [
        "TRAINORCH_ATTEMPT", "TRAINORCH_CHECKPOINT_DIR", "TRAINORCH_JOB_ID", "TRAINORCH_JOB_NAME",
        "TRAINORCH_PROGRESS_FD",
    ]  # fmt: skip


def test_fair_share_puts_a_single_job_of_another_user_before_a_sweep(tmp_path):
    config = TrainOrch(data_dir=str(tmp_path), workers=1, gpus_per_worker=1, mlflow="off")
    service = JobService(config.to_config())
    try:
        holder = _submit(service, ALICE, "holder", source=HOLD, resources={"gpus": 1})
        wait_until(lambda: service.get(ALICE, holder["id"])["state"] == "running", what="run")
        sweep = [_submit(service, ALICE, f"trial-{n}", resources={"gpus": 1}) for n in range(3)]
        mine = _submit(service, BOB, "single", resources={"gpus": 1})
        # Alice holds the GPU and has three jobs queued: Bob's one job goes first.
        assert service.get(BOB, mine["id"])["queue_position"] == 1
        assert [service.get(ALICE, j["id"])["queue_position"] for j in sweep] == [2, 3, 4]
        reason = service.get(ALICE, sweep[0]["id"])["wait_reason"]
        assert reason.startswith("behind 1 job that goes first"), reason
        service.cancel(ALICE, holder["id"])
        jobs = [mine, *sweep]
        wait_until(
            lambda: all(service.get(ADMIN, j["id"])["state"] == "succeeded" for j in jobs),
            timeout=90, what="the queue to drain",
        )  # fmt: skip
        started = [service.get(ADMIN, j["id"])["started"] for j in jobs]
        assert started == sorted(started), started  # Bob's first, then the sweep in order
    finally:
        service.stop(detach=False)
        stop_services_under(tmp_path)


def test_quotas_hold_a_users_jobs_back_and_refuse_a_submit_past_the_queue_limit(tmp_path):
    from jupyter_trainorch.orchestrator.quotas import QuotaExceeded

    config = TrainOrch(
        data_dir=str(tmp_path), workers=1, gpus_per_worker=2, mlflow="off",
        gpu_quota=1, user_quotas='{"alice": {"queued": 1}}',
    ).to_config()  # fmt: skip
    service = JobService(config)
    try:
        holder = _submit(service, ALICE, "holder", source=HOLD, resources={"gpus": 1})
        wait_until(lambda: service.get(ALICE, holder["id"])["state"] == "running", what="run")
        second = _submit(service, ALICE, "second", source=HOLD, resources={"gpus": 1})
        with pytest.raises(QuotaExceeded) as refused:
            _submit(service, ALICE, "third", resources={"gpus": 1})
        assert str(refused.value) == (
            "alice has 1 jobs waiting, the most the queue quota allows; "
            "submit again once some have started"
        )
        # One GPU is free, but Alice holds her one: her second job waits; Bob's starts.
        theirs = _submit(service, BOB, "bobs", source=HOLD, resources={"gpus": 1})
        wait_until(lambda: service.get(BOB, theirs["id"])["state"] == "running", what="bob")
        view = service.get(ALICE, second["id"])
        assert view["state"] == "queued"
        assert view["wait_reason"].startswith("alice may hold 1 GPUs at once (quota) and holds 1")
        assert service.me(ALICE, "hub")["quota"] == {
            "gpus": 1, "queued": 1, "gpus_held": 1, "waiting": 1, "groups": [],
        }  # fmt: skip
        assert service.me(BOB, "hub")["quota"] == {
            "gpus": 1, "queued": None, "gpus_held": 1, "waiting": 0, "groups": [],
        }  # fmt: skip
        for job in (holder, second, theirs):
            service.cancel(ADMIN, job["id"])
    finally:
        service.stop(detach=False)
        stop_services_under(tmp_path)


def test_group_quotas_count_every_members_jobs_together(tmp_path):
    from jupyter_trainorch.orchestrator.quotas import QuotaExceeded

    ann, ben = Caller("ann", groups=("vision", "staff")), Caller("ben", groups=("vision",))
    config = TrainOrch(
        data_dir=str(tmp_path), workers=1, gpus_per_worker=3, mlflow="off",
        group_quotas='{"vision": {"gpus": 1, "queued": 2}}',
    ).to_config()  # fmt: skip
    service = JobService(config)
    try:
        body = {"spec": {"name": "x", "source": HOLD, "resources": {"gpus": 1},
                         "quota_groups": ["someone-elses"]}}  # fmt: skip
        holder, _ = service.submit(ann, body)
        # Groups come from authentication: the body's are replaced by the caller's.
        assert service.store.get_job(holder["id"]).spec["quota_groups"] == ["vision"]
        wait_until(lambda: service.get(ann, holder["id"])["state"] == "running", what="run")
        # Two GPUs are free, but the group holds its one: Ben's job waits.
        waiting = _submit(service, ben, "bens", source=HOLD, resources={"gpus": 1})
        wait_until(lambda: service.get(ben, waiting["id"])["wait_reason"], what="a reason")
        view = service.get(ben, waiting["id"])
        assert view["state"] == "queued"
        assert view["wait_reason"].startswith("group vision may hold 1 GPUs at once (quota)")
        # A user outside the group is not held back.
        other = _submit(service, BOB, "bobs", source=HOLD, resources={"gpus": 1})
        wait_until(lambda: service.get(BOB, other["id"])["state"] == "running", what="bob")
        _submit(service, ann, "second", resources={"gpus": 1})
        with pytest.raises(QuotaExceeded) as refused:
            _submit(service, ben, "third", resources={"gpus": 1})
        assert str(refused.value) == (
            "group vision has 2 jobs waiting, the most the queue quota allows; "
            "submit again once some have started"
        )
        assert service.me(ben, "hub")["quota"]["groups"] == [
            {"name": "vision", "gpus": 1, "queued": 2, "gpus_held": 1, "waiting": 2}
        ]
        for job in service.list(ADMIN)["jobs"]:
            if job["state"] not in ("succeeded", "failed", "cancelled"):
                service.cancel(ADMIN, job["id"])
    finally:
        service.stop(detach=False)
        stop_services_under(tmp_path)
