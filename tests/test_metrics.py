"""The Prometheus endpoint's figures, parsed with prometheus_client's own parser."""

from __future__ import annotations

from conftest import submit, wait_final, wait_until
from prometheus_client.parser import text_string_to_metric_families

from jupyter_trainorch.orchestrator.metrics import render_metrics
from jupyter_trainorch.spec import Resources, RetryPolicy


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_jobs_attempts_gpu_time_and_queue_waits(host_factory, tmp_path):
    host = host_factory(workers=1, gpus_per_worker=1)
    counter = tmp_path / "count"
    flaky = (
        "import pathlib, time\np = pathlib.Path(counter)\nn = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\ntime.sleep(0.3)\nif n == 0:\n    raise RuntimeError('first')\n"
    )
    job_id = submit(host, name="flaky", source=flaky, params={"counter": str(counter)},
                    resources=Resources(gpus=1), retry=RetryPolicy(max_retries=1, backoff=0.1))  # fmt: skip
    assert wait_final(host, job_id).state == "succeeded"
    user = host.store.get_job(job_id).user  # as the service records it (here: none)
    got = samples(render_metrics(host))
    assert (
        got[("trainorch_jobs", (("priority", "normal"), ("state", "succeeded"), ("user", user)))]
        == 1
    )
    assert got[("trainorch_attempts_total", (("cause", "job"), ("state", "failed")))] == 1
    assert got[("trainorch_attempts_total", (("cause", "job"), ("state", "succeeded")))] == 1
    assert got[("trainorch_retries_total", ())] == 1
    assert got[("trainorch_preemptions_total", ())] == 0
    assert got[("trainorch_gpu_seconds_total", (("user", user),))] >= 0.6
    assert got[("trainorch_queue_wait_seconds_count", ())] == 1
    assert got[("trainorch_queue_wait_seconds_bucket", (("le", "+Inf"),))] == 1
    assert got[("trainorch_dispatch_latency_seconds_count", ())] == 2  # both attempts ran
    assert 0 < got[("trainorch_dispatch_latency_seconds_sum", ())] < 60
    assert got[("trainorch_gpus", ())] == 1 and got[("trainorch_gpus_busy", ())] == 0
    assert got[("trainorch_workers", ())] == 1 and got[("trainorch_running_attempts", ())] == 0


def test_the_grafana_dashboard_charts_only_metrics_the_service_exports(host_factory):
    import json
    import re
    from pathlib import Path

    # Autoscaled (to the one worker there is), so that its figures are exported too.
    host = host_factory(workers=1, gpus_per_worker=1, autoscale_minimum=1, autoscale_maximum=1)
    exported = {family.name for family in text_string_to_metric_families(render_metrics(host))}
    dashboard = json.loads(
        (Path(__file__).parent.parent / "examples" / "grafana" / "trainorch.json").read_text()
    )
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"trainorch_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, used - exported


def test_the_event_log_writes_job_events_and_lines_as_ecs_json(host_factory, tmp_path):
    import json

    path = tmp_path / "events.json"
    host = host_factory(workers=1, gpus_per_worker=1, event_log=str(path))
    job_id = submit(host, name="speaks", source="print('hello from the job')\nraise SystemExit(3)")
    assert wait_final(host, job_id).state == "failed"

    def written() -> list[dict]:
        found = [json.loads(line) for line in path.read_text().splitlines()]
        done = {r.get("event", {}).get("action") for r in found} >= {"failed"}
        return (
            found if done and any(r["event"]["dataset"] == "trainorch.job" for r in found) else []
        )

    # The feed and the lines reach the file from their own threads, shortly after the store.
    records = wait_until(written, 10, "the job's events and lines in the event log")
    assert all(r["ecs.version"] and r["@timestamp"] and "log.level" in r for r in records)
    mine = [r for r in records if r.get("trainorch", {}).get("job_id") == job_id]
    actions = [r["event"]["action"] for r in mine if r["event"]["dataset"] == "trainorch.events"]
    assert actions[0] == "queued" and actions[-1] == "failed" and "running" in actions
    (line,) = [r for r in mine if r["event"]["dataset"] == "trainorch.job"]
    assert line["message"] == "hello from the job"
    assert line["trainorch"]["attempt"] == 1 and line["host"]["name"].startswith("tcp://")
    failed = [r for r in mine if r.get("event", {}).get("action") == "failed"]
    assert failed[0]["log.level"] == "warning"
