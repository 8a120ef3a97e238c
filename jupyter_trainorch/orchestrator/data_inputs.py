"""A job's data inputs on the service's side: checked at submit and again when a waiting
job is released (so a missing file fails the job before it holds a GPU), and ``job:``
references turned into the MLflow artifacts of the job they name for each attempt.

No bytes move here and MLflow is never called: the job's process stages its inputs
(``runner.data_inputs``). What is checked: a local path exists (as the service sees it:
shared storage for jobs on other hosts), an fsspec protocol's package is installed, and a
``job:`` reference names a job this one waits on that declares that artifact.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..data_uri import data_kind, job_reference, local_path, protocol
from ..spec import JobSpec, SpecError
from ..store import SUCCEEDED, JobRecord, JobStore


def check_data(
    store: JobStore,
    spec: JobSpec,
    refs: Mapping[str, str],
    unfinished: set[str],
    group: Mapping[str, str],
) -> None:
    """Check and normalise ``spec.data`` in place at submit. ``refs``: each dependency as
    written -> its job id; ``unfinished``: dependencies still to end (a local input may be
    written by one of them, so it is looked for when the job is released); ``group``:
    names of jobs submitted with this one -> their ids (not stored yet)."""
    for name, uri in list(spec.data.items()):
        kind = data_kind(uri)
        if kind == "path":
            path = local_path(uri)
            if not os.path.isabs(path):
                if not spec.workdir:
                    raise SpecError(
                        f"data.{name} is a relative path ({uri!r}) and the job has no working "
                        "folder to find it in; give an absolute path"
                    )
                path = os.path.normpath(os.path.join(spec.workdir, path))
                spec.data[name] = path
            if not unfinished:
                _must_exist(name, path)
        elif kind == "fsspec":
            _check_protocol(name, uri)
        elif kind == "job":
            spec.data[name] = _job_input(store, name, uri, refs, group)
            if job_reference(spec.data[name])[0] not in unfinished:
                problem = artifact_uri(store, name, spec.data[name])[1]
                if problem:
                    raise SpecError(problem)


def _must_exist(name: str, path: str) -> None:
    if not os.path.exists(path):
        raise SpecError(f"data input {name!r} not found: {path}")


def _check_protocol(name: str, uri: str) -> None:
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol(uri))
    except ImportError as err:
        raise SpecError(
            f"data.{name}: the protocol {protocol(uri)!r} needs a package that is not installed "
            f"where the service runs ({str(err).strip()})"
        ) from None
    except ValueError:
        raise SpecError(
            f"data.{name}: {protocol(uri)!r} is not a protocol fsspec knows ({uri[:80]!r})"
        ) from None


def _job_input(
    store: JobStore, name: str, uri: str, refs: Mapping[str, str], group: Mapping[str, str]
) -> str:
    """``job:REF/artifacts/PATH`` with REF made the dependency's id; REF must be a job this
    one waits on, and one that declares the artifact when it is stored already."""
    ref, path = job_reference(uri)
    job_id = refs.get(ref) or (ref if ref in refs.values() else None)
    if job_id is None:
        raise SpecError(
            f"data.{name} reads an artifact of job {ref!r}, which this job does not wait on; "
            f"add it to depends_on (--after {ref})"
        )
    upstream = None if ref in group else store.get_job(job_id)
    if upstream is not None:
        declared = [a.get("name") for a in upstream.spec.get("artifacts") or []]
        wanted = path.split("/")[1]
        if wanted not in declared:
            listed = ", ".join(str(d) for d in declared) or "none"
            raise SpecError(
                f"data.{name}: job {ref!r} declares no artifact {wanted!r} (its artifacts: {listed})"
            )
    return f"job:{job_id}/{path}"


def release_problem(job: JobRecord, store: JobStore) -> str | None:
    """Why a job whose dependencies have ended cannot run with its data, or None: a local
    input still missing, or an upstream artifact that cannot exist."""
    for name, uri in (job.spec.get("data") or {}).items():
        kind = data_kind(uri)
        if kind == "path" and not os.path.exists(local_path(uri)):
            return f"data input {name!r} not found: {local_path(uri)}"
        if kind == "job":
            problem = artifact_uri(store, name, uri)[1]
            if problem:
                return problem
    return None


def artifact_uri(store: JobStore, name: str, uri: str) -> tuple[str, str | None]:
    """``job:ID/artifacts/PATH`` as ``runs:/RUN/artifacts/PATH`` of the attempt that
    succeeded, or ``("", why not)``."""
    job_id, path = job_reference(uri)
    upstream = store.get_job(job_id)
    if upstream is None:
        return "", f"data input {name!r}: job {job_id} is gone"
    if upstream.state != SUCCEEDED:
        return "", (
            f"data input {name!r}: job {upstream.name} ({job_id}) {upstream.state}, so it "
            f"logged no {path}"
        )
    run_id = next(
        (a.mlflow_run_id for a in reversed(upstream.attempts) if a.state == SUCCEEDED), None
    )
    if not run_id:
        return "", (
            f"data input {name!r}: job {upstream.name} ({job_id}) has no MLflow run to hold "
            f"{path} (is tracking off?)"
        )
    return f"runs:/{run_id}/{path}", None


def attempt_data(store: JobStore, job: JobRecord) -> dict[str, Any]:
    """The ``data`` and ``data_errors`` of an attempt's request: ``job:`` references as
    MLflow run artifacts, and a sentence for any that cannot be had."""
    data: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, uri in (job.spec.get("data") or {}).items():
        if data_kind(uri) == "job":
            resolved, problem = artifact_uri(store, name, uri)
            if problem:
                errors[name] = problem
                continue
            uri = resolved
        data[name] = uri
    return {"data": data, "data_errors": errors} if errors else {"data": data}
