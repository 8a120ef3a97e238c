"""Deployment hooks (``TRAINORCH_DEPLOY_HOOKS``): tell a deployment service that a job's
model was registered, so that it can pick the new version up.

A hook fires ``on`` ``registered`` (every version a job registers) or ``alias:PATTERN`` (a
version a job registered with an alias matching the glob ``PATTERN``, e.g.
``alias:champion``), for models whose name matches the glob ``model`` (default ``*``), and
goes ``to``:

- ``webhook:URL``: a POST of JSON ``{"event", "model", "version", "alias", "model_uri",
  "run_id", "experiment_id", "job_id", "user"}``;
- ``command:PROGRAM ARGS…`` (split as a shell would, run without one): the same values as
  ``TRAINORCH_MODEL_NAME``, ``TRAINORCH_MODEL_VERSION``, ``TRAINORCH_MODEL_ALIAS``,
  ``TRAINORCH_MODEL_URI``, ``TRAINORCH_RUN_ID``, ``TRAINORCH_EXPERIMENT_ID``,
  ``TRAINORCH_JOB_ID``, ``TRAINORCH_USER`` and ``TRAINORCH_HOOK_EVENT``, plus
  ``MLFLOW_TRACKING_URI`` to fetch the model with; its output goes to the service log.

Registrations arrive through the change feed (the tracking lane records the version on the
job and publishes it) and wait in a bounded queue for a thread of their own: a slow or
broken hook is cut off after its ``timeout`` and logged, and never holds up the scheduling
loop or the tracking lane. Each hook fires once per model version.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..environ import without_service_settings
from ..store import JobStore

log = logging.getLogger(__name__)

MAX_HOOKS = 20
MAX_TIMEOUT = 3600.0
DEFAULT_TIMEOUT = {"webhook": 10.0, "command": 300.0}
MAX_WAITING = 1000  # registrations waiting for their hooks
MAX_REMEMBERED = 100_000  # (model, version, hook) already fired
MAX_LOGGED_OUTPUT = 64 * 1024  # of a command's output, in the service log
_KEYS = {"on", "to", "model", "timeout"}


class DeployHookConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DeployHook:
    on: str  # "registered" or "alias:PATTERN"
    to: str  # "webhook:URL" or "command:PROGRAM ARGS…"
    model: str = "*"
    timeout: float = 10.0

    def wants(self, registration: Registration) -> bool:
        if not fnmatch.fnmatchcase(registration.model, self.model):
            return False
        if self.on == "registered":
            return True
        pattern = self.on.partition(":")[2]
        return bool(registration.alias) and fnmatch.fnmatchcase(registration.alias, pattern)


@dataclass(frozen=True)
class Registration:
    """A model version a job registered (and the alias it pointed at it, if any)."""

    model: str
    version: str
    alias: str
    run_id: str
    experiment_id: str
    job_id: str
    user: str

    def payload(self, hook: DeployHook) -> dict[str, Any]:
        return {
            "event": hook.on.partition(":")[0],
            "model": self.model,
            "version": self.version,
            "alias": self.alias or None,
            "model_uri": f"models:/{self.model}/{self.version}",
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "job_id": self.job_id,
            "user": self.user,
        }


def parse_deploy_hooks(text: str) -> list[DeployHook]:
    """``[{"on": "registered", "model": "resnet*", "to": "webhook:https://…"}, …]``; raises
    DeployHookConfigError saying which hook is wrong and how."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError:
        raise DeployHookConfigError('a JSON list of hooks such as [{"on": "registered", '
                                    '"to": "webhook:https://…"}]') from None  # fmt: skip
    if not isinstance(data, list) or len(data) > MAX_HOOKS:
        raise DeployHookConfigError(f"a JSON list of at most {MAX_HOOKS} hooks")
    return [_parse_hook(item, f"hook {n + 1}") for n, item in enumerate(data)]


def _parse_hook(item: Any, where: str) -> DeployHook:
    if not isinstance(item, dict) or not {"on", "to"} <= set(item) <= _KEYS:
        raise DeployHookConfigError(f"{where}: an object with on, to and optionally model, timeout")
    on, to, model = item["on"], item["to"], item.get("model", "*")
    if not isinstance(on, str) or not (on == "registered" or (on.startswith("alias:") and on[6:])):
        raise DeployHookConfigError(f"{where}: on must be 'registered' or 'alias:NAME', not {on!r}")
    kind = to.partition(":")[0] if isinstance(to, str) else ""
    if kind not in DEFAULT_TIMEOUT or not _target_ok(to):
        raise DeployHookConfigError(
            f"{where}: to must be webhook:http(s)://… or command:PROGRAM [ARGS], not {to!r}"
        )
    if not isinstance(model, str) or not model.strip():
        raise DeployHookConfigError(
            f"{where}: model must be a model name or a glob such as resnet*"
        )
    timeout = item.get("timeout", DEFAULT_TIMEOUT[kind])
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:  # fmt: skip
        raise DeployHookConfigError(f"{where}: timeout must be seconds from 0 to {MAX_TIMEOUT:g}")
    return DeployHook(on, to, model, float(timeout))


def _target_ok(to: str) -> bool:
    kind, _, target = to.partition(":")
    if kind == "webhook":
        parts = urlsplit(target)
        return parts.scheme in ("http", "https") and bool(parts.netloc)
    try:
        return bool(shlex.split(target))
    except ValueError:  # an unclosed quote
        return False


class DeployHooks:
    """Fires the hooks of each registration, from a thread of its own."""

    def __init__(self, hooks: list[DeployHook], store: JobStore, tracking_uri: str | None) -> None:
        self.hooks = hooks
        self.store = store
        self.tracking_uri = tracking_uri or ""
        self.fired: dict[tuple[str, str, int], None] = {}
        self._waiting: queue.Queue[str | None] = queue.Queue(maxsize=MAX_WAITING)
        self._thread = threading.Thread(target=self._loop, name="trainorch-deploy-hooks", daemon=True)  # fmt: skip
        self._thread.start()

    def job_changed(self, change: dict[str, Any]) -> None:
        """A feed subscriber: hands a job whose model was just registered to the thread."""
        if change.get("kind") != "job" or "model" not in (change.get("mlflow") or ()):
            return
        try:
            self._waiting.put_nowait(change["job_id"])
        except queue.Full:
            log.warning("deploy hooks of job %s dropped: too many waiting", change["job_id"])

    def close(self, timeout: float = 5.0) -> None:
        try:
            self._waiting.put(None, timeout=timeout)
        except queue.Full:
            return  # the thread is a daemon: it ends with the service
        self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while (job_id := self._waiting.get()) is not None:
            try:
                registration = self._registration(job_id)
                if registration is not None:
                    self._fire_all(registration)
            except Exception:  # noqa: BLE001 - a hook must never stop the ones after it
                log.exception("deploy hooks of job %s failed", job_id)

    def _registration(self, job_id: str) -> Registration | None:
        job = self.store.get_job(job_id)
        model = (job.mlflow or {}).get("model") if job is not None else None
        if not model:
            return None
        # The version was made from the last attempt's run (see TrackingHooks.job_ended).
        run_id = next((a.mlflow_run_id for a in reversed(job.attempts) if a.mlflow_run_id), "")
        return Registration(
            model["name"], str(model["version"]), model.get("alias") or "", run_id or "",
            str(job.mlflow.get("experiment_id") or ""), job.id, job.user or "",
        )  # fmt: skip

    def _fire_all(self, registration: Registration) -> None:
        for n, hook in enumerate(self.hooks):
            key = (registration.model, registration.version, n)
            if key in self.fired or not hook.wants(registration):
                continue
            self.fired[key] = None
            if len(self.fired) > MAX_REMEMBERED:
                del self.fired[next(iter(self.fired))]
            where = f"deploy hook {n + 1} ({hook.to}) for model {registration.model} v{registration.version}"  # fmt: skip
            try:
                if hook.to.startswith("webhook:"):
                    self._post(hook, registration)
                else:
                    self._run(hook, registration, where)
            except Exception as err:  # noqa: BLE001 - a broken hook is the admin's to fix
                log.warning("%s failed: %s", where, err)
            else:
                log.info("%s done", where)

    def _post(self, hook: DeployHook, registration: Registration) -> None:
        import urllib.request

        body = json.dumps(registration.payload(hook)).encode()
        request = urllib.request.Request(
            hook.to.partition(":")[2], data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=hook.timeout) as answer:  # noqa: S310 - admin's URL
            answer.read()

    def _run(self, hook: DeployHook, registration: Registration, where: str) -> None:
        values = registration.payload(hook)
        env = without_service_settings()  # the service's tokens are not the hook's to see
        env.update({
            "TRAINORCH_HOOK_EVENT": values["event"],
            "TRAINORCH_MODEL_NAME": registration.model,
            "TRAINORCH_MODEL_VERSION": registration.version,
            "TRAINORCH_MODEL_ALIAS": registration.alias,
            "TRAINORCH_MODEL_URI": values["model_uri"],
            "TRAINORCH_RUN_ID": registration.run_id,
            "TRAINORCH_EXPERIMENT_ID": registration.experiment_id,
            "TRAINORCH_JOB_ID": registration.job_id,
            "TRAINORCH_USER": registration.user,
        })  # fmt: skip
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        proc = subprocess.Popen(
            shlex.split(hook.to.partition(":")[2]), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = proc.communicate(timeout=hook.timeout)
        except subprocess.TimeoutExpired:
            # Its own process group: whatever the command started goes with it.
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                output, _ = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a process that left the group holds the pipe
                output = b""
            _log_output(where, output)
            raise RuntimeError(f"timed out after {hook.timeout:g}s and was killed") from None
        _log_output(where, output)
        if proc.returncode != 0:
            raise RuntimeError(f"exited with code {proc.returncode}")


def _log_output(where: str, output: bytes) -> None:
    text = output[-MAX_LOGGED_OUTPUT:].decode("utf-8", "replace").rstrip()
    for line in text.splitlines():
        log.info("%s: %s", where, line)
