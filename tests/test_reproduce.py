"""Reproducibility and sweeps: rerun byte for byte, export to a standalone template, grids."""

from __future__ import annotations

import cloudpickle
import pytest

from jupyter_trainorch.client import transport as transport_module
from jupyter_trainorch.client.export import export_job
from jupyter_trainorch.client.job import jobs, submit
from jupyter_trainorch.client.magics import build_request, sweep_requests
from jupyter_trainorch.package import build_package, template_files
from jupyter_trainorch.spec import TemplateRegistry, render_spec


@pytest.fixture
def local(monkeypatch):
    """The user's own service, started for this test's data folder (and stopped after it)."""
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    monkeypatch.setenv("TRAINORCH_MLFLOW", "off")
    return transport_module.connect()


def test_rerun_and_export_reproduce_the_job(local, tmp_path):
    source = "total = x * factor\nprint('total', total)\n"
    package = build_package({"factor": cloudpickle.dumps(7)})
    original = submit(
        {"template": "python-cell", "source": source, "params": {"x": 3}, "name": "calc"}, package
    )
    assert original.wait(60) == "succeeded" and original.logs() == "total 21"

    again = original.rerun()
    assert again.id != original.id
    assert again.wait(60) == "succeeded" and again.logs() == "total 21"
    first, second = original.to_dict(), again.to_dict()
    assert second["rerun_of"] == original.id
    assert second["code_hash"] == first["code_hash"] and len(first["code_hash"]) == 16
    assert (
        second["spec"]["source"] == first["spec"]["source"] and second["params"] == first["params"]
    )
    assert local.package(again.id) == local.package(original.id) == package

    written = export_job(first, local.package(original.id), tmp_path / "export")
    assert sorted(p.name for p in written) == ["calc.py", "calc.yaml", "variables.zip"]
    template = TemplateRegistry().load_file(tmp_path / "export" / "calc.yaml")
    spec = render_spec(template, workdir=str(tmp_path))
    exported = submit({"spec": spec.to_dict()}, build_package(files=template_files(template)))
    assert exported.wait(60) == "succeeded", exported.logs()
    assert exported.logs() == "total 21"


def test_a_sweep_is_one_group_of_jobs_sorted_in_pandas(local):
    body, _, _ = build_request(
        "--sweep --name sw lr=0.1,0.3 batch=8,16 epochs=2", "print(lr * batch * epochs)", 5
    )
    requests = sweep_requests(body)
    assert len(requests) == 4 and len({r["group"] for r in requests}) == 1
    assert {(r["params"]["lr"], r["params"]["batch"]) for r in requests} == {
        (0.1, 8),
        (0.1, 16),
        (0.3, 8),
        (0.3, 16),
    }
    assert all(r["params"]["epochs"] == 2 for r in requests)
    handles = [submit(request) for request in requests]
    assert [h.wait(60) for h in handles] == ["succeeded"] * 4
    frame = jobs()
    assert set(frame["group"]) == {requests[0]["group"]}
    best = frame.sort_values("param.lr", ascending=False).iloc[0]
    assert best["param.lr"] == 0.3 and best["name"].startswith("sw[lr=0.3")
