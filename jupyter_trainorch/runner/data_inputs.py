"""A job's data inputs in its own process, before the job's first line.

Each input ends up as a local path in ``TRAINORCH_DATA_<NAME>``: a local path as it is
(nothing is copied), a remote fsspec URI copied into the attempt's folder, a
``models:/`` or ``runs:/`` URI downloaded with MLflow. Each gets a content hash for
reproducibility (``DataRecord``), written to ``DATA_FILE`` for the supervisor, which
reports it with the attempt's outcome; the tracking process logs it to the attempt's run.

Only jobs with inputs import this module, and fsspec or MLflow only when an input needs
them: a job without inputs pays nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ..data_uri import data_env_name, data_kind, local_path, model_parts
from .names import DATA_DIR, DATA_FILE

# A dataset larger than this (bytes, in all) is not hashed: reading terabytes before every
# attempt would cost more than the record is worth. Its size and file count are recorded.
HASH_LIMIT_ENV = "TRAINORCH_DATA_HASH_LIMIT"
DEFAULT_HASH_LIMIT = 16 * 2**30
CHUNK = 2**20
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

WriteStatus = Callable[[str, Any, str, bool], None]


class DataInputError(Exception):
    """An input that cannot be had; ``retryable``: another attempt may get it."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def stage_inputs(attempt_dir: str, request: Any, write_status: WriteStatus) -> int | None:
    """Stage every input and put its path in the environment; the exit code of a failed
    attempt (its sentence written as the child's status), or None to go on."""
    records: dict[str, Any] = {}
    try:
        for message in (request.get("data_errors") or {}).values():
            raise DataInputError(message)
        for name, uri in (request.get("data") or {}).items():
            record = stage_one(attempt_dir, name, uri)
            os.environ[data_env_name(name)] = record["path"]
            records[name] = record
            shown = (record.get("sha256") or "not hashed")[:16]
            print(f"trainorch: data input {name}: {record['path']} (sha256 {shown})", flush=True)
    except DataInputError as err:
        print(str(err), file=sys.stderr, flush=True)
        write_status(attempt_dir, request, str(err), err.retryable)
        return 1 if err.retryable else 3
    update_data_file(attempt_dir, {"data": records})
    return None


def stage_one(attempt_dir: str, name: str, uri: str) -> dict[str, Any]:
    """One input as a ``DataRecord``: staged, its path local, its content hashed."""
    kind = data_kind(uri)
    target = os.path.join(attempt_dir, DATA_DIR, name)
    record: dict[str, Any] = {"uri": uri}
    if kind == "path":
        path = local_path(uri)
        if not os.path.exists(path):
            raise DataInputError(f"data input {name!r} not found: {path}")
    elif kind == "fsspec":
        path = _copy_remote(name, uri, target)
    else:
        path, version = _download_mlflow(name, uri, kind, target)
        if version:
            record["version"] = version
    record["path"] = os.path.abspath(path)
    record.update(content_hash(record["path"]))
    return record


def _copy_remote(name: str, uri: str, target: str) -> str:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.exists(path):
            raise DataInputError(f"data input {name!r} not found: {uri}")
        os.makedirs(target, exist_ok=True)
        local = os.path.join(target, os.path.basename(path.rstrip("/")) or name)
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", local + "/", recursive=True)
        else:
            fs.get_file(path, local)
    except DataInputError:
        raise
    except FileNotFoundError:
        raise DataInputError(f"data input {name!r} not found: {uri}") from None
    except Exception as err:  # noqa: BLE001 - any filesystem's error: the network may recover
        raise DataInputError(
            f"data input {name!r} could not be copied from {uri}: {type(err).__name__}: {err}",
            retryable=True,
        ) from None
    return local


def _download_mlflow(name: str, uri: str, kind: str, target: str) -> tuple[str, str | None]:
    """A registered model's or a run's artifacts, downloaded; for ``models:/NAME@alias``
    also the version the alias pointed at (a later move of the alias changes nothing here)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise DataInputError(
            f"data input {name!r} ({uri}) needs MLflow, and this job has no tracking URI "
            "(tracking is off: set MLFLOW_TRACKING_URI in the job's env)"
        )
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    version = None
    try:
        if kind == "model":
            model, alias, version = model_parts(uri)
            if alias:
                from mlflow import MlflowClient

                version = str(MlflowClient().get_model_version_by_alias(model, alias).version)
            uri = f"models:/{model}/{version}"
        os.makedirs(target, exist_ok=True)
        # Its progress bar would be a line of the job's log per input; the job's own
        # downloads keep the setting the job has.
        quiet = os.environ.get(PROGRESS_BAR_ENV)
        os.environ[PROGRESS_BAR_ENV] = "false"
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=target)
        finally:
            if quiet is None:
                del os.environ[PROGRESS_BAR_ENV]
            else:
                os.environ[PROGRESS_BAR_ENV] = quiet
    except MlflowException as err:
        missing = err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
        raise DataInputError(
            f"data input {name!r} not found: {uri} ({first_line(err)})"
            if missing
            else f"data input {name!r} could not be downloaded from {uri}: {first_line(err)}",
            retryable=not missing,
        ) from None
    except OSError as err:
        raise DataInputError(f"data input {name!r} not found: {uri} ({err})") from None
    return path, version


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def content_hash(path: str, limit: int | None = None) -> dict[str, Any]:
    """``sha256``, ``bytes`` and ``files`` of a file or folder. A folder's hash is that of
    its files' sorted ``relative path<NUL>sha256`` lines, so it does not depend on the
    order the filesystem lists them in or on their times. Past ``limit`` bytes: no hash."""
    if limit is None:
        limit = int(os.environ.get(HASH_LIMIT_ENV) or DEFAULT_HASH_LIMIT)
    if os.path.isfile(path):
        files = [("", path)]
    else:
        files = sorted(
            (os.path.relpath(os.path.join(root, f), path), os.path.join(root, f))
            for root, _, names in os.walk(path)
            for f in names
            if os.path.isfile(os.path.join(root, f))
        )
    size = sum(os.path.getsize(full) for _, full in files)
    record: dict[str, Any] = {"bytes": size, "files": len(files), "sha256": None}
    if size > limit:
        record["note"] = f"larger than {HASH_LIMIT_ENV} ({limit} bytes): not hashed"
        return record
    if os.path.isfile(path):
        record["sha256"] = _file_hash(path)
        return record
    listing = hashlib.sha256()
    for relative, full in files:
        listing.update(f"{relative}\0{_file_hash(full)}\n".encode())
    record["sha256"] = listing.hexdigest()
    return record


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def update_data_file(attempt_dir: str, fields: dict[str, Any]) -> None:
    from pathlib import Path

    from ..files import write_private

    path = Path(attempt_dir, DATA_FILE)
    try:
        known = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    write_private(path, json.dumps({**known, **fields}))


def recorded_data(attempt_dir: str) -> dict[str, Any]:
    """What the child recorded of its inputs and artifacts, for the attempt's outcome."""
    from pathlib import Path

    try:
        found = json.loads(Path(attempt_dir, DATA_FILE).read_text())
    except (FileNotFoundError, ValueError):
        found = {}
    return {"data": found.get("data"), "artifacts": found.get("artifacts")}
