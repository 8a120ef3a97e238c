"""The worker side of an attempt: the request it is given and the outcome it returns.

``run_attempt`` runs as a task on a real Dask worker process (what the orchestrator
submits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from jupyter_trainorch.runner.protocol import (
    ATTEMPT_ENV,
    CHECKPOINT_DIR_ENV,
    JOB_ID_ENV,
    JOB_NAME_ENV,
    OUTCOME_FILE,
    PROGRESS_FD_ENV,
    REQUEST_FILE,
    AttemptOutcome,
    AttemptRequest,
    attempt_key,
)
from jupyter_trainorch.runner.supervisor import read_log, run_attempt


@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True,
        host="127.0.0.1", dashboard_address=":0",
    )  # fmt: skip
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _request(job_id: str, **fields: Any) -> AttemptRequest:
    request: AttemptRequest = {
        "job_id": job_id, "attempt": 1, "name": job_id, "kind": "python", "source": "",
        "command": "", "params": {}, "env": {}, "outputs": [],
        "workdir": None, "timeout": 60, "gpu_ids": [], "grace": 2.0,
        "system_metrics_interval": 0, "checkpoint_dir": "", "package": None,
    }  # fmt: skip
    request.update(fields)  # type: ignore[typeddict-item]
    return request


def _run(client: Any, request: AttemptRequest) -> tuple[AttemptOutcome, Path]:
    outcome = client.submit(run_attempt, request, pure=False).result(timeout=90)
    return outcome, Path(outcome["log_path"]).parent


def test_the_request_reaches_the_child_and_the_outcome_comes_back_whole(dask_client, tmp_path):
    names = [JOB_ID_ENV, JOB_NAME_ENV, ATTEMPT_ENV, CHECKPOINT_DIR_ENV, PROGRESS_FD_ENV]
    source = (
        "import json, os\n"
        f"print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))\n"
        f"open(os.path.join(os.environ[{CHECKPOINT_DIR_ENV!r}], 'step'), 'w').write(str(lr))\n"
        "doubled = lr * 2\n"
    )
    checkpoints = tmp_path / "checkpoints"
    request = _request("round-trip", attempt=2, source=source, params={"lr": 0.5},
                       outputs=["doubled"], checkpoint_dir=str(checkpoints))  # fmt: skip
    outcome, folder = _run(dask_client, request)

    assert outcome["exit_code"] == 0, read_log(outcome["log_path"], 0)
    assert set(outcome) == set(AttemptOutcome.__annotations__)
    assert cloudpickle.loads(outcome["outputs"]) == {"doubled": 1.0}
    assert folder.name == attempt_key("round-trip", 2)
    stored = json.loads((folder / REQUEST_FILE).read_text())
    assert stored == {k: v for k, v in request.items() if k != "package"}
    recorded = json.loads((folder / OUTCOME_FILE).read_text())
    assert recorded == {k: v for k, v in outcome.items() if k != "outputs"}
    [line] = [record[2] for record in read_log(outcome["log_path"], 0)]
    seen = json.loads(line)
    assert seen[JOB_ID_ENV] == "round-trip" and seen[JOB_NAME_ENV] == "round-trip"
    assert seen[ATTEMPT_ENV] == "2" and seen[CHECKPOINT_DIR_ENV] == str(checkpoints)
    assert seen[PROGRESS_FD_ENV].isdigit()
    assert (checkpoints / "step").read_text() == "0.5"
