"""Real kernels running ``%%train``: the quickstart notebook, user errors, and a kernel
that reaches a running Jupyter server's orchestrator with no configuration."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import wait_until
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
        elif output.get("output_type") == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


def _run(notebook, cwd: Path, allow_errors: bool = False):
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})  # fmt: skip
    client.execute()
    return notebook


@pytest.fixture
def kernel_env(monkeypatch):
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")


def test_quickstart_runs_in_a_plain_kernel(tmp_path, kernel_env):
    notebook = _run(nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4), tmp_path)
    cells = {i: _text(c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"}
    texts = list(cells.values())
    assert "Job" in texts[1] and "demo" in texts[1]
    assert texts[2].splitlines()[:4] == [
        "succeeded",
        "epoch 0 lr 0.1",
        "epoch 1 lr 0.1",
        "epoch 2 lr 0.1",
    ]
    assert "result 40" in texts[4] and "succeeded" in texts[4]
    assert texts[5].strip() == "40 40"
    assert "flaky attempt 1" in texts[7] and "succeeded on attempt 3" in texts[7]
    assert "(1, 'failed', 'RuntimeError: flaky attempt 1')" in texts[8]
    assert "(3, 'succeeded', None)" in texts[8]
    assert "demo" in texts[9] and "capture" in texts[9] and "flaky" in texts[9]
    assert "epoch 2 lr 0.1" in texts[10]

    # Tracking was on by default: the capture job's run lists what the cell took along.
    from mlflow.tracking import MlflowClient

    data = Path(os.environ["TRAINORCH_DATA_DIR"])
    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("trainorch")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`mlflow.runName` = 'capture'"
    )
    # The tracking process describes a run after the job started, without holding it up:
    # a short job can end first.
    wait_until(
        lambda: any(a.path.endswith("variables.json") for a in
                    client.list_artifacts(run.info.run_id, "trainorch")),
        timeout=60, what="the capture run's description",
    )  # fmt: skip
    manifest = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "trainorch/variables.json", str(tmp_path))
        ).read_text()
    )
    # ``factor`` travels inside ``scale`` (cloudpickle takes a function's globals along).
    assert set(manifest) == {"scale", "Model"} and manifest["scale"]["type"] == "function"
    frozen = Path(
        client.download_artifacts(run.info.run_id, "trainorch/requirements.txt", str(tmp_path))
    ).read_text()
    assert "cloudpickle==" in frozen


def test_the_pipeline_example_passes_outputs_between_steps(tmp_path, kernel_env):
    notebook = _run(nbformat.read(EXAMPLES / "pipeline.ipynb", as_version=4), tmp_path)
    texts = [_text(c) for c in notebook.cells if c.cell_type == "code"]
    assert "<Step train after preprocess -> model>" in texts[1]
    assert " ".join(texts[2].split()) == (
        "{'preprocess': 'succeeded', 'train': 'succeeded', 'evaluate': 'succeeded', "
        "'alert': 'cancelled'}"
    )
    assert " ".join(texts[3].split()) == "({'model': {'w': 2.0, 'b': 1.0}}, {'error': 0.0})"
    assert texts[4].startswith("cancelled - it was to run only if dependency ")
    assert texts[4].rstrip().endswith("failed or was cancelled, and it succeeded")
    assert "report: succeeded {'error': 0.0}" in texts[6]


@pytest.mark.timeout(300)
def test_the_sweep_example_compares_and_registers_the_best(tmp_path, kernel_env):
    notebook = _run(nbformat.read(EXAMPLES / "sweep-and-compare.ipynb", as_version=4), tmp_path)
    texts = [_text(c) for c in notebook.cells if c.cell_type == "code"]
    assert texts[3].strip() == "['succeeded', 'succeeded', 'succeeded']"
    table = texts[4].splitlines()
    assert table[0].split() == ["param.lr", "param.epochs", "metric.loss"]
    assert [float(row.split()[0]) for row in table[1:4]] == [0.2, 0.05, 0.01]
    losses = [float(row.split()[2]) for row in table[1:4]]
    assert losses == sorted(losses) and losses[0] < 1e-3
    assert "best lr: 0.2" in texts[4]
    assert "registered w 2.9" in texts[5] or "registered w 3.0" in texts[5]
    assert "'name': 'line-fit'" in texts[6] and "'alias': 'champion'" in texts[6]

    from mlflow.tracking import MlflowClient

    data = Path(os.environ["TRAINORCH_DATA_DIR"])
    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    version = client.get_model_version_by_alias("line-fit", "champion")
    run = client.get_run(version.run_id)
    assert run.data.params["lr"] == "0.2"


def test_the_preemption_example_resumes_from_its_checkpoint(tmp_path, kernel_env, monkeypatch):
    monkeypatch.setenv("TRAINORCH_PREEMPTION_MIN_RUNTIME", "3")
    notebook = _run(nbformat.read(EXAMPLES / "preemption.ipynb", as_version=4), tmp_path)
    texts = [_text(c) for c in notebook.cells if c.cell_type == "code"]
    assert texts[2].strip() == "running"
    assert "urgent fix done" in texts[3] and "succeeded" in texts[3]
    assert texts[4].splitlines() == ["succeeded", "[(1, 'preempted'), (2, 'succeeded')]"]
    stopped, resumed, finished = texts[5].splitlines()
    assert stopped.startswith("asked to stop after step ")
    step = int(stopped.split()[-1])
    assert step > 0 and resumed == f"starting at step {step}" and finished == "finished 80 steps"


def test_the_ddp_example_runs_two_ranks(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("TRAINORCH_WORKERS", "2")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "0")
    notebook = _run(nbformat.read(EXAMPLES / "pytorch-ddp.ipynb", as_version=4), tmp_path)
    texts = [_text(c) for c in notebook.cells if c.cell_type == "code"]
    lines = texts[2].splitlines()
    assert lines[0] == "succeeded", texts[2]
    done = ", sum of ranks 3, same weights as rank 0: True"
    assert any(t.startswith("rank 0 of 2: loss ") and t.endswith(done) for t in lines), lines
    assert any(t.startswith("[rank 1] rank 1 of 2: loss ") and t.endswith(done) for t in lines)


ERROR_CELLS = [
    ("%%train --gpu 2\nprint(1)", "UsageError: %%train: unknown flag --gpu (did you mean --gpus?)"),
    (
        "%%train --template nope\nprint(1)",
        "UsageError: unknown template 'nope' (available: command, python-cell, torch)",
    ),
    (
        "%%train --gpus 16\nprint(1)",
        "UsageError: the job asks for 16 GPUs but the largest worker has 1",
    ),
    (
        "%%train --priority asap\nprint(1)",
        "UsageError: --priority must be one of low, normal, high, urgent or an integer, not 'asap'",
    ),
    ("%%train lr0.1\nprint(1)", "UsageError: %%train: 'lr0.1' is not a key=value pair"),
    (
        "%%train --after nosuchjob\nprint(1)",
        "UsageError: --after: there is no job with id or name 'nosuchjob'",
    ),
    ("%%train\nprint(lock)", "UsageError: variable 'lock' (lock) cannot be sent to the worker"),
    (
        "%%train\nprint(len(big))",
        "UsageError: variable 'big' is 2.0 MiB pickled, over the 1 MiB limit",
    ),
    ("%%train\n", "UsageError: %%train is a cell magic, but the cell body is empty."),
    ("%%train\n   \n", "UsageError: %%train: the cell is empty"),
    (
        "%%train --out 1x\nx = 1",
        "UsageError: %%train: --out takes variable names, and '1x' is not one",
    ),
    ("%job nosuchjob", "UsageError: there is no job with id or name 'nosuchjob'"),
    ("%job", "UsageError: %job: usage is %job ID [status|logs|cancel|retry|wait]"),
]


def test_user_errors_are_one_sentence_in_the_notebook(tmp_path, kernel_env):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "%load_ext jupyter_trainorch\nimport os, threading\nlock = threading.Lock()\n"
            "big = bytes(2 * 2**20)\nos.environ['TRAINORCH_MAX_CAPTURE_MB'] = '1'"
        )
    ]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source, _ in ERROR_CELLS]
    _run(notebook, tmp_path, allow_errors=True)
    for cell, (source, expected) in zip(notebook.cells[1:], ERROR_CELLS, strict=True):
        # IPython shows a UsageError as one stderr line, without a traceback.
        shown = _text(cell)
        assert shown.startswith(expected), (source, shown)
        assert shown.count("\n") == 1 and "Traceback" not in shown, (source, shown)


def test_job_magic_cancels_waits_and_retries(tmp_path, kernel_env):
    cells = [
        "%load_ext jupyter_trainorch",
        "%%train --name long\nimport time\nprint('started', flush=True)\ntime.sleep(120)",
        "long = _\nimport time\nwhile 'started' not in long.logs():\n    time.sleep(0.1)\nprint(long.state)",
        "%job {long.id} cancel",
        "%job {long.id} wait",
        "print(long.state, len(long.to_dict()['attempts']))",
        "%job {long.id} retry",
        "print(long.cancel() in ('running', 'starting', 'queued', 'cancelled'), long.wait(60))",
        "%job long",  # by name: the newest job called long
        "try:\n    long.result()\nexcept Exception as err:\n    print(type(err).__name__, err)",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    _run(notebook, tmp_path)
    texts = [_text(c) for c in notebook.cells]
    assert texts[2].strip() == "running"
    assert texts[3].startswith("job ") and "running" in texts[3]
    assert texts[5].strip() == "cancelled 1"
    assert texts[6].strip().endswith("queued") or "starting" in texts[6] or "running" in texts[6]
    assert texts[7].strip() == "True cancelled"
    assert "cancelled" in texts[8] and "2 attempt(s)" in texts[8]
    assert texts[9].startswith("JobFailed job ") and texts[9].strip().endswith("(long) cancelled")


pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_trainorch": True}},
        "MappingKernelManager": {"default_kernel_name": "python3"},
    }


async def test_a_kernel_finds_the_server_without_configuration(
    jp_serverapp, jp_fetch, tmp_path, kernel_env
):
    # The extension exported TRAINORCH_URL/TOKEN into the server's environment, which every
    # kernel it starts inherits; this kernel is started the same way, with nothing set by hand.
    assert os.environ["TRAINORCH_URL"] == jp_serverapp.connection_url
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_trainorch"),
        nbformat.v4.new_code_cell(
            "%%train --name via-server --wait --out answer\nanswer = 6 * 7\nprint('computing')"
        ),
        nbformat.v4.new_code_cell(
            "import os\nfrom jupyter_trainorch.client import transport\n"
            "print(answer, transport.connect().root == os.environ['TRAINORCH_URL'].rstrip('/'))"
        ),
    ]
    client = NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    await client.async_execute()
    assert "computing" in _text(notebook.cells[1])
    assert _text(notebook.cells[2]).strip() == "42 True"
    listing = json.loads((await jp_fetch("trainorch", "api", "jobs")).body)
    assert [j["name"] for j in listing["jobs"]] == ["via-server"]
    assert listing["jobs"][0]["state"] == "succeeded"


async def test_a_kernel_started_by_the_server_submits_through_it(
    jp_serverapp, jp_fetch, kernel_env
):
    started = json.loads(
        (await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))).body
    )
    kernel = jp_serverapp.kernel_manager.get_kernel(started["id"])
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        shown: list[str] = []

        def collect(message):
            content = message["content"]
            if message["msg_type"] == "stream":
                shown.append(content["text"])
            elif message["msg_type"] == "error":
                shown.append(f"{content['ename']}: {content['evalue']}")

        for code in (
            "%load_ext jupyter_trainorch",
            "%%train --name from-a-lab-kernel --wait\nprint('hello from the worker')",
            "import os; print('url', os.environ['TRAINORCH_URL'])",
        ):
            reply = await client.execute_interactive(code, output_hook=collect, timeout=120)
            assert reply["content"]["status"] == "ok", shown
    finally:
        client.stop_channels()
        await jp_fetch("api", "kernels", started["id"], method="DELETE")
    text = "".join(shown)
    assert "hello from the worker" in text and "succeeded" in text
    assert f"url {jp_serverapp.connection_url}" in text
    listing = json.loads((await jp_fetch("trainorch", "api", "jobs")).body)
    assert [(j["name"], j["state"]) for j in listing["jobs"]] == [
        ("from-a-lab-kernel", "succeeded")
    ]
