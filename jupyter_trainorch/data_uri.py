"""What a job's data input (``data: {NAME: URI}``) names, read from its text alone.

Shared by the spec (validation), the orchestrator (checks at submit, ``job:`` references)
and the job's process (staging), so it imports only the standard library: the job's
process pays for nothing else before its first line.

Kinds of URI:

- ``path``: a local path (absolute, or relative to the job's working folder at submit);
  ``file:///abs/path`` is the same thing.
- ``fsspec``: ``PROTOCOL://…`` of any fsspec filesystem (``s3://``, ``gs://``, ``http://``…),
  copied into the attempt's folder before the job starts.
- ``model``: ``models:/NAME@alias`` or ``models:/NAME/VERSION``, downloaded with MLflow.
- ``run``: ``runs:/RUN_ID/PATH``, an artifact of an MLflow run, downloaded with MLflow.
- ``job``: ``job:JOB/artifacts/PATH``, an artifact that a job this one waits on logged
  (``JOB`` its name or id); the orchestrator turns it into ``runs:/…`` for each attempt.
"""

from __future__ import annotations

import re

MAX_URI_CHARS = 2048
MAX_DATA_INPUTS = 64
MAX_ARTIFACTS = 100
DATA_ENV_PREFIX = "TRAINORCH_DATA_"
DATA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
ARTIFACTS_DIR = "artifacts"  # where a job's artifacts go in its attempt's MLflow run
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_MODEL = re.compile(r"models:/([^/@]{1,200})(?:@([A-Za-z0-9_-]{1,100})|/([0-9]{1,12}))")
_RUN = re.compile(r"runs:/([0-9a-f]{32})/(.+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
JOB_REF_MARK = f"/{ARTIFACTS_DIR}/"


def data_env_name(name: str) -> str:
    """The variable that holds the local path of data input ``name``."""
    return DATA_ENV_PREFIX + name.upper()


def data_kind(uri: str) -> str:
    """``path``, ``fsspec``, ``model``, ``run`` or ``job``; ValueError (a predicate,
    such as "must be …") when ``uri`` is none of them."""
    if not uri or _CONTROL.search(uri):
        raise ValueError("must be a path or URI without control characters")
    if uri.startswith("models:"):
        if not _MODEL.fullmatch(uri):
            raise ValueError(f"must be models:/NAME@alias or models:/NAME/VERSION, not {uri!r}")
        return "model"
    if uri.startswith("runs:"):
        if not _RUN.fullmatch(uri) or ".." in uri.split("/"):
            raise ValueError(f"must be runs:/RUN_ID/PATH (a 32-hex run id), not {uri!r}")
        return "run"
    if uri.startswith("job:"):
        job_reference(uri)
        return "job"
    found = _SCHEME.match(uri)
    if found:
        if found.group(1).lower() == "file":
            if not uri[len("file://") :].startswith("/"):
                raise ValueError(f"must be file:///ABSOLUTE/PATH, not {uri!r}")
            return "path"
        return "fsspec"
    if ":" in uri.split("/")[0] and not uri.startswith(("/", ".")):
        raise ValueError(
            f"must be a path, a URI such as s3://bucket/key, models:/NAME@alias, "
            f"runs:/RUN_ID/PATH or job:JOB/{ARTIFACTS_DIR}/PATH, not {uri[:80]!r}"
        )
    return "path"


def protocol(uri: str) -> str:
    """The fsspec protocol of an ``fsspec`` URI (``s3``)."""
    found = _SCHEME.match(uri)
    return found.group(1).lower() if found else ""


def local_path(uri: str) -> str:
    """The path of a ``path`` URI (``file:///x`` -> ``/x``)."""
    return uri[len("file://") :] if uri.lower().startswith("file://") else uri


def job_reference(uri: str) -> tuple[str, str]:
    """``job:train/artifacts/model.pt`` -> ``("train", "artifacts/model.pt")``."""
    ref, mark, rest = uri[len("job:") :].partition(JOB_REF_MARK)
    if not ref or not mark or not rest or ".." in rest.split("/") or rest.startswith("/"):
        raise ValueError(f"must be job:JOB/{ARTIFACTS_DIR}/PATH (JOB a name or id), not {uri!r}")
    return ref, f"{ARTIFACTS_DIR}/{rest}"


def model_parts(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@alias`` -> ``(NAME, alias, None)``; ``models:/NAME/3`` -> ``(NAME, None, "3")``."""
    found = _MODEL.fullmatch(uri)
    if found is None:
        raise ValueError(f"not a model URI: {uri!r}")
    return found.group(1), found.group(2), found.group(3)
