"""Failures by kind: the job's rules (retry, do not, retry on another worker, tell the
admins) and workers that fail job after job left out for a cool-down, on a real local
Dask cluster with a real HTTP receiver for the admins' alerts."""

from __future__ import annotations

import json

import pytest
from conftest import submit, wait_final, wait_until
from test_alerts import receiver  # noqa: F401 - the fixture

from jupyter_trainorch.spec import Resources, RetryPolicy

GREEDY = (
    "import time\nblock = bytearray(400 * 2**20)\n"
    "block[::4096] = b'x' * len(block[::4096])\ntime.sleep(30)"
)


def test_rules_are_checked_with_one_sentence() -> None:
    from jupyter_trainorch.spec import SpecError

    with pytest.raises(SpecError, match=r"retries.on.oom must be 'job', 'out_of_memory'"):
        RetryPolicy.parse({"on": {"oom": "retry"}})
    with pytest.raises(SpecError, match=r"on.job cannot both retry and not retry"):
        RetryPolicy.parse({"on": {"job": ["retry", "no_retry"]}})
    rules = RetryPolicy.parse({"max": 2, "on": {"infrastructure": "notify_admins"}})
    assert rules.actions("infrastructure") == {"retry", "notify_admins"}
    assert rules.actions("out_of_memory") == {"no_retry"}


def test_out_of_memory_retries_on_another_worker_and_tells_the_admins(host_factory, receiver):  # noqa: F811
    alerts = json.dumps([{"on": "admins", "to": f"webhook:{receiver.url}"}])
    host = host_factory(workers=2, gpus_per_worker=1, alerts=alerts)
    wait_until(lambda: len(host.orchestrator.backend.workers) == 2, 60, "two workers")
    rules = RetryPolicy.parse(
        {"max": 1, "backoff": 0.1, "on": {"out_of_memory": ["other_worker", "notify_admins"]}}
    )
    job_id = submit(host, name="greedy", source=GREEDY, retry=rules,
                    resources=Resources(memory=200 * 2**20))  # fmt: skip
    job = wait_final(host, job_id, 90)
    assert job.state == "failed" and [a.cause for a in job.attempts] == ["out_of_memory"] * 2
    first, second = (attempt.worker for attempt in job.attempts)
    assert first != second, "the retry ran on the worker where it failed"
    wait_until(lambda: receiver.bodies, 15, "the admins' alert")
    (alert,) = receiver.bodies  # once per rule and job
    assert alert["event"] == "admins" and alert["cause"] == "out_of_memory"
    assert f"job {job_id} (greedy)" in alert["text"] and alert["worker"] == first


def test_a_no_retry_rule_fails_the_job_at_once(host_factory) -> None:
    host = host_factory(workers=1, gpus_per_worker=1)
    rules = RetryPolicy.parse({"max": 3, "backoff": 0.1, "on": {"job": "no_retry"}})
    job_id = submit(host, name="once", source="raise ValueError('bad input')", retry=rules)
    job = wait_final(host, job_id, 60)
    assert job.state == "failed" and len(job.attempts) == 1


# Fails on the worker whose GPU slot is 0, as a job would on a worker with a broken GPU.
ON_BAD_GPU = "import os\nif os.environ['CUDA_VISIBLE_DEVICES'] == '0':\n    raise RuntimeError('CUDA error: an illegal memory access')"


def test_a_worker_that_fails_job_after_job_takes_no_new_job_for_a_while(host_factory, receiver):  # noqa: F811
    alerts = json.dumps([{"on": "admins", "to": f"webhook:{receiver.url}"}])
    host = host_factory(workers=2, gpus_per_worker=1, slots_per_worker=1, alerts=alerts,
                        worker_failure_limit=2, worker_cooldown=120)  # fmt: skip
    wait_until(lambda: len(host.orchestrator.backend.workers) == 2, 60, "two workers")
    one_gpu = Resources(gpus=1)
    failed_on_bad: list[str] = []
    for round_ in range(4):
        pair = [submit(host, name=f"r{round_}-{i}", source=ON_BAD_GPU, resources=one_gpu)
                for i in range(2)]  # fmt: skip
        for job_id in pair:
            job = wait_final(host, job_id, 60)
            if job.state == "failed":
                failed_on_bad.append(job.attempts[0].worker)
        if len(failed_on_bad) >= 2:
            break
    assert len(set(failed_on_bad)) == 1 and len(failed_on_bad) == 2
    bad = failed_on_bad[0]
    cluster = host.call_sync(lambda o: o.cluster_status())
    assert [w["address"] for w in cluster["workers"] if w["excluded_until"]] == [bad]
    changes = host.orchestrator.feed.since(0)
    assert any(c["kind"] == "cluster" and c.get("worker") == bad for c in changes)
    wait_until(lambda: receiver.bodies, 15, "the admins' alert")
    assert "takes no new job for 2 min: 2 jobs failed on it" in receiver.bodies[0]["text"]

    later = [submit(host, name=f"later{i}", source=ON_BAD_GPU, resources=one_gpu)
             for i in range(3)]  # fmt: skip
    for job_id in later:
        job = wait_final(host, job_id, 60)
        assert job.state == "succeeded" and job.attempts[0].worker != bad
