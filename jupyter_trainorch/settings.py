"""``c.TrainOrch.*``: every trainorch setting, defined, documented and checked once.

Each orchestrator setting is a trait that falls back to its ``TRAINORCH_*`` variable,
parsed by the trait itself: kernels, the CLI and the service started on a user's behalf
have no Jupyter config, only their environment. ``TrainOrch().to_config()`` reads them
all (the service, a script); ``to_env()`` hands them to a service started detached.

A wrong value is a ``SettingError``: one sentence that names the setting as the user
wrote it, ``c.TrainOrch.workers`` or ``TRAINORCH_WORKERS``.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from traitlets import (
    DefaultHandler,
    Enum,
    Float,
    Integer,
    List,
    TraitError,
    TraitType,
    Type,
    Unicode,
    default,
)
from traitlets.config import Configurable

from .orchestrator.config import OrchestratorConfig, default_data_dir
from .spec.errors import SpecError


class SettingError(SpecError, TraitError):
    """A wrong setting. ``str(err)`` is one sentence that names it."""


class _Setting(TraitType[Any, Any]):
    """A configurable trait that refuses a wrong value with a ``SettingError``.

    traitlets' own message speaks of "the 'workers' trait of a TrainOrch instance"; a user
    wrote ``c.TrainOrch.workers`` or ``TRAINORCH_WORKERS``, so that is what the sentence says.
    """

    def __init__(self, *args: Any, env: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag(config=True, env=env)
        if env:
            self.help = self.__doc__ = f"{self.help} Environment: {env}."

    def validate(self, obj: Any, value: Any) -> Any:
        try:
            value = super().validate(obj, value)
        except TraitError:
            self.refuse(value)
        if not self.acceptable(value):
            self.refuse(value)
        return value

    def acceptable(self, value: Any) -> bool:
        return True

    def refuse(self, value: Any, setting: str = "") -> NoReturn:
        setting = setting or f"c.{self.this_class.__name__}.{self.name}"
        raise SettingError(f"{setting} must be {self.info()}, not {value!r}")


class Count(_Setting, Integer):  # type: ignore[misc]
    def info(self) -> str:
        return f"a whole number of at least {self.min}"


class Seconds(_Setting, Float):  # type: ignore[misc]
    def info(self) -> str:
        return f"a number of seconds of at least {self.min:g}"

    def acceptable(self, value: float) -> bool:
        return math.isfinite(value)  # nan passes every bound check; an infinite wait never ends


class Text(_Setting, Unicode):  # type: ignore[misc]
    info_text = "text"


class ClusterAddress(Text):
    info_text = (
        "'local', 'local-cuda', 'gateway', 'kubernetes', 'slurm' or a scheduler address such "
        "as tcp://host:8786"
    )

    def acceptable(self, value: str) -> bool:
        from .cluster.options import MANAGED_BACKENDS

        return value in ("local", "local-cuda", *MANAGED_BACKENDS) or "://" in value


class BackendOptions(Text):
    info_text = 'a JSON object of cluster options such as {"workers": 2, "gpus_per_worker": 1}'

    def acceptable(self, value: str) -> bool:
        return self.fits(value, backend=None)

    def fits(self, value: str, backend: str | None) -> bool:
        """True when ``value`` holds only options ``backend`` takes (None: any backend's);
        else the sentence of the refusal says which key is wrong."""
        from .cluster.options import ClusterOptionsError, parse_cluster_options

        try:
            parse_cluster_options(value, backend)
        except ClusterOptionsError as err:
            self.info_text = f"{BackendOptions.info_text} ({err})"
            return False
        self.info_text = BackendOptions.info_text
        return True


class QuotaTable(Text):
    info_text = 'a JSON object such as {"alice": {"gpus": 16, "queued": 1000}}'

    def acceptable(self, value: str) -> bool:
        from .orchestrator.quotas import parse_user_quotas

        try:
            parse_user_quotas(value)
        except ValueError:
            return False
        return True


class PriorityClass(Text):
    info_text = "a priority class (low, normal, high, urgent), an integer, or 'never'"

    def acceptable(self, value: str) -> bool:
        from .spec import SpecError
        from .spec.units import parse_priority

        if value.strip().lower() == "never":
            return True
        try:
            parse_priority(value)
        except SpecError:
            return False
        return True


class AlertRules(Text):
    info_text = 'a JSON list of rules such as [{"on": ["failed"], "to": "webhook:https://…"}]'

    def acceptable(self, value: str) -> bool:
        from .orchestrator.alerts import AlertConfigError, parse_rules

        try:
            parse_rules(value)
        except AlertConfigError as err:
            self.info_text = f"{AlertRules.info_text} ({err})"
            return False
        return True


class DeployHookRules(Text):
    info_text = 'a JSON list of hooks such as [{"on": "registered", "to": "webhook:https://…"}]'

    def acceptable(self, value: str) -> bool:
        from .orchestrator.deploy_hooks import DeployHookConfigError, parse_deploy_hooks

        try:
            parse_deploy_hooks(value)
        except DeployHookConfigError as err:
            self.info_text = f"{DeployHookRules.info_text} ({err})"
            return False
        return True


class Choice(_Setting, Enum):  # type: ignore[misc]
    def info(self) -> str:
        return "one of " + ", ".join(repr(value) for value in self.values or ())


class Subclass(_Setting, Type):  # type: ignore[misc]
    pass


def _from_environment(name: str) -> DefaultHandler:
    """The ``@default`` of setting ``name``: its variable when set, else the trait's default."""
    return default(name)(lambda settings: settings._environment_value(name))


class TrainOrch(Configurable):
    """trainorch's settings; each one with a variable falls back to it."""

    # -- the cluster --------------------------------------------------------------------
    cluster = ClusterAddress(
        "local",
        env="TRAINORCH_CLUSTER",
        help="Where jobs run: 'local' (a Dask cluster on this machine, started by the service; "
        "dask-cuda workers when GPUs and dask-cuda are present), 'local-cuda', 'gateway' "
        "(dask-gateway), 'kubernetes' (the dask-kubernetes operator), 'slurm' (dask-jobqueue; "
        "these three take cluster_options), or the address of a running Dask scheduler "
        "(tcp://host:8786).",
    )
    workers = Count(2, min=1, env="TRAINORCH_WORKERS", help="Local cluster: worker processes.")
    gpus_per_worker = Count(
        0,
        min=0,
        env="TRAINORCH_GPUS_PER_WORKER",
        help="Local cluster: GPU slots each worker advertises, so the GPU path runs without "
        "GPUs (0: real GPUs only).",
    )
    slots_per_worker = Count(
        4,
        min=1,
        env="TRAINORCH_SLOTS_PER_WORKER",
        help="Local cluster: jobs each worker runs at once.",
    )
    cluster_idle_timeout = Seconds(
        600.0,
        min=0,
        env="TRAINORCH_CLUSTER_IDLE_TIMEOUT",
        help="A local cluster with no client, no task and no uncollected outcome ends after "
        "this many seconds (0: never).",
    )
    autoscale_maximum = Count(
        0,
        min=0,
        env="TRAINORCH_AUTOSCALE_MAXIMUM",
        help="Autoscaling on the queue: the cluster may grow to this many workers while jobs "
        "wait for capacity (0: no autoscaling). Needs a cluster manager that scales: the "
        "local cluster, dask-kubernetes, dask-gateway or dask-jobqueue.",
    )
    autoscale_minimum = Count(
        0,
        min=0,
        env="TRAINORCH_AUTOSCALE_MINIMUM",
        help="Autoscaling: workers kept even when nothing runs.",
    )
    autoscale_grace = Seconds(
        300.0,
        min=0,
        env="TRAINORCH_AUTOSCALE_GRACE",
        help="Autoscaling: seconds a worker stays idle before it may be closed; a worker "
        "that runs a job is never closed.",
    )
    worker_failure_limit = Count(
        3,
        min=0,
        env="TRAINORCH_WORKER_FAILURE_LIMIT",
        help="A worker on which this many different jobs fail within worker_cooldown seconds, "
        "with no success between, takes no new job for worker_cooldown seconds (0: never).",
    )
    worker_cooldown = Seconds(
        600.0,
        min=1,
        env="TRAINORCH_WORKER_COOLDOWN",
        help="Seconds a worker that fails job after job is left out of placement.",
    )
    container_engine = Choice(
        ["auto", "podman", "docker", "off"],
        "auto",
        env="TRAINORCH_CONTAINER_ENGINE",
        help="What runs a job that names an image: 'auto' (podman, else docker, on the "
        "workers' PATH), 'podman', 'docker', or 'off' (such jobs are refused). The engine "
        "must answer on the workers; a local cluster's workers are this machine.",
    )
    cluster_options = BackendOptions(
        "",
        env="TRAINORCH_CLUSTER_OPTIONS",
        help="The gateway, kubernetes and slurm clusters' options as JSON, e.g. "
        '{"address": "http://gateway:8000", "workers": 2, "gpus_per_worker": 1, "cores": 8, '
        '"memory": "64 GiB"} (docs/backends.md lists each backend\'s keys).',
    )
    fair_share_half_life = Seconds(
        4 * 3600.0,
        min=0,
        env="TRAINORCH_FAIR_SHARE_HALF_LIFE",
        help="Fair share inside a priority class: users take turns, weighted by their GPU use, "
        "which stops counting with this half-life in seconds (0: off, first come first served "
        "inside a class).",
    )
    gpu_quota = Count(
        0,
        min=0,
        env="TRAINORCH_GPU_QUOTA",
        help="GPUs one user's running jobs may hold at once (0: no limit); a job past it waits.",
    )
    queue_quota = Count(
        0,
        min=0,
        env="TRAINORCH_QUEUE_QUOTA",
        help="Jobs one user may have waiting at once (0: no limit); a submit past it is refused.",
    )
    user_quotas = QuotaTable(
        "",
        env="TRAINORCH_USER_QUOTAS",
        help="Per-user quotas replacing gpu_quota/queue_quota, as JSON: "
        '{"alice": {"gpus": 16, "queued": 1000}}.',
    )
    group_quotas = QuotaTable(
        "",
        env="TRAINORCH_GROUP_QUOTAS",
        help="Quotas of groups (JupyterHub groups), on what all their members hold and have "
        'waiting together, as JSON: {"vision": {"gpus": 32, "queued": 2000}}.',
    )
    event_log = Text(
        "",
        env="TRAINORCH_EVENT_LOG",
        help="A file the service appends job events and job log lines to as ECS JSON lines "
        "(for Filebeat and Elasticsearch); '-' for standard error; empty: none.",
    )
    alerts = AlertRules(
        "",
        env="TRAINORCH_ALERTS",
        help="Alert rules as JSON: each names job states, queue_wait (with minutes) or log "
        "(with a match regex) in on, and webhook:URL, email:ADDRESS or owner in to, e.g. "
        '[{"on": ["failed"], "to": "webhook:https://hooks.slack.com/…"}].',
    )
    smtp_url = Text(
        "",
        env="TRAINORCH_SMTP_URL",
        help="The mail server of email alerts: smtp://[user:password@]host:port "
        "(smtp+starttls://… to encrypt).",
    )
    deploy_hooks = DeployHookRules(
        "",
        env="TRAINORCH_DEPLOY_HOOKS",
        help="Hooks called when a job registers its model, as JSON: each names on "
        "('registered', or 'alias:NAME' for a version given that alias), optionally model "
        "(a name or glob) and timeout (seconds), and to: webhook:URL (a POST of JSON with "
        "model, version, alias, run_id, job_id, user) or command:PROGRAM ARGS (run with "
        "those as TRAINORCH_MODEL_* variables), e.g. "
        '[{"on": "alias:champion", "model": "resnet*", "to": "command:/usr/local/bin/deploy.sh"}].',
    )
    preemption_priority = PriorityClass(
        "urgent",
        env="TRAINORCH_PREEMPTION_PRIORITY",
        help="Jobs of this priority or above that no worker has room for may preempt running "
        "jobs of a lower priority ('never': no preemption). Victims get SIGTERM and the grace "
        "period, then wait first in their class and resume from their checkpoint.",
    )
    preemption_min_runtime = Seconds(
        600.0,
        min=0,
        env="TRAINORCH_PREEMPTION_MIN_RUNTIME",
        help="Seconds a job runs before it may be preempted.",
    )
    checkpoint_root = Text(
        "",
        env="TRAINORCH_CHECKPOINT_ROOT",
        help="Folder of the jobs' checkpoints (TRAINORCH_CHECKPOINT_DIR is a subfolder per "
        "job, kept across attempts and preemptions, removed when the job succeeds or is "
        "cancelled). For a job to resume on another host, every worker must see it at this "
        "path (shared storage). Empty: checkpoints in data_dir.",
    )
    cluster_backend_class = Subclass(
        None,
        klass="jupyter_trainorch.cluster.ClusterBackend",
        allow_none=True,
        env="TRAINORCH_CLUSTER_BACKEND_CLASS",
        help="The cluster backend class (a ClusterBackend subclass, built with from_config); "
        "empty: chosen from cluster.",
    )
    # -- the store ----------------------------------------------------------------------
    data_dir = Text(
        "",
        env="TRAINORCH_DATA_DIR",
        help="Folder of the default store and MLflow files, checkpoints and the service's "
        "runtime file (empty: <jupyter data dir>/trainorch).",
    )
    db = Text(
        "",
        env="TRAINORCH_DB",
        help="The job store: an SQLAlchemy URL or an SQLite file (empty: trainorch.db in "
        "data_dir); PostgreSQL (postgresql+psycopg://…) for a shared service.",
    )
    store_class = Subclass(
        "jupyter_trainorch.store.JobStore",
        klass="jupyter_trainorch.store.JobStore",
        env="TRAINORCH_STORE_CLASS",
        help="The job store class (a JobStore subclass, built with the store's URL).",
    )
    lease_ttl = Seconds(
        15.0,
        min=1,
        env="TRAINORCH_LEASE_TTL",
        help="Seconds the service's hold on the store lasts unless renewed: another service "
        "may take the store over this long after the first one died.",
    )
    # -- attempts -----------------------------------------------------------------------
    grace_period = Seconds(
        5.0,
        min=0,
        env="TRAINORCH_GRACE_PERIOD",
        help="Seconds a stopped job's process has between SIGTERM and SIGKILL.",
    )
    max_infrastructure_retries = Count(
        3,
        min=0,
        env="TRAINORCH_MAX_INFRASTRUCTURE_RETRIES",
        help="Times a job runs again after a lost worker or a restart, on top of its own retries.",
    )
    audit_interval = Seconds(
        15.0,
        min=0,
        env="TRAINORCH_AUDIT_INTERVAL",
        help="Seconds between checks of running attempts that no event has accounted for.",
    )
    max_log_bytes = Count(
        100_000_000,
        min=0,
        env="TRAINORCH_MAX_LOG_BYTES",
        help="Bytes of output kept per attempt (0: all of it).",
    )
    system_metrics_interval = Seconds(
        10.0,
        min=0,
        env="TRAINORCH_SYSTEM_METRICS_INTERVAL",
        help="Seconds between samples of a job's CPU, memory and GPU use (0: none).",
    )
    # -- tracking -----------------------------------------------------------------------
    mlflow = Text(
        "",
        env="TRAINORCH_MLFLOW",
        help="MLflow tracking URI, or 'off' (empty: MLFLOW_TRACKING_URI, else SQLite in data_dir).",
    )
    mlflow_ui_url = Text(
        "",
        env="TRAINORCH_MLFLOW_UI_URL",
        help="Where jobs' run links point, e.g. http://127.0.0.1:5000 (empty: no links).",
    )
    tracker_class = Subclass(
        "jupyter_trainorch.tracking.MlflowTracker",
        klass="jupyter_trainorch.tracking.MlflowTracker",
        env="TRAINORCH_TRACKER_CLASS",
        help="The experiment tracker class (an MlflowTracker subclass, built with the "
        "tracking URI, artifact folder and UI URL).",
    )
    # -- the service and its front ------------------------------------------------------
    service_url = Text(
        "",
        env="TRAINORCH_SERVICE_URL",
        help="Server extension: the URL of a shared trainorch service to forward to (set by "
        "JupyterHub for single-user servers); empty: find or start the user's own service.",
    )
    admin_users = List(
        Unicode(), help="Service: users who may act on every job and stop the service."
    ).tag(config=True)
    admin_groups = List(
        Unicode(), help="Service (JupyterHub): members of these hub groups are admins too."
    ).tag(config=True)
    others_jobs = Choice(
        ["queue", "hidden"],
        "queue",
        help="Service: what users see of other users' jobs: 'queue' (name, user, state, "
        "priority, resources, position) or 'hidden'.",
    )

    _cluster_default = _from_environment("cluster")
    _workers_default = _from_environment("workers")
    _gpus_per_worker_default = _from_environment("gpus_per_worker")
    _slots_per_worker_default = _from_environment("slots_per_worker")
    _cluster_idle_timeout_default = _from_environment("cluster_idle_timeout")
    _autoscale_maximum_default = _from_environment("autoscale_maximum")
    _autoscale_minimum_default = _from_environment("autoscale_minimum")
    _autoscale_grace_default = _from_environment("autoscale_grace")
    _worker_failure_limit_default = _from_environment("worker_failure_limit")
    _worker_cooldown_default = _from_environment("worker_cooldown")
    _container_engine_default = _from_environment("container_engine")
    _cluster_options_default = _from_environment("cluster_options")
    _fair_share_half_life_default = _from_environment("fair_share_half_life")
    _gpu_quota_default = _from_environment("gpu_quota")
    _queue_quota_default = _from_environment("queue_quota")
    _user_quotas_default = _from_environment("user_quotas")
    _group_quotas_default = _from_environment("group_quotas")
    _event_log_default = _from_environment("event_log")
    _alerts_default = _from_environment("alerts")
    _smtp_url_default = _from_environment("smtp_url")
    _deploy_hooks_default = _from_environment("deploy_hooks")
    _preemption_priority_default = _from_environment("preemption_priority")
    _preemption_min_runtime_default = _from_environment("preemption_min_runtime")
    _checkpoint_root_default = _from_environment("checkpoint_root")
    _cluster_backend_class_default = _from_environment("cluster_backend_class")
    _data_dir_default = _from_environment("data_dir")
    _db_default = _from_environment("db")
    _store_class_default = _from_environment("store_class")
    _lease_ttl_default = _from_environment("lease_ttl")
    _grace_period_default = _from_environment("grace_period")
    _max_infrastructure_retries_default = _from_environment("max_infrastructure_retries")
    _audit_interval_default = _from_environment("audit_interval")
    _max_log_bytes_default = _from_environment("max_log_bytes")
    _system_metrics_interval_default = _from_environment("system_metrics_interval")
    _mlflow_default = _from_environment("mlflow")
    _mlflow_ui_url_default = _from_environment("mlflow_ui_url")
    _tracker_class_default = _from_environment("tracker_class")
    _service_url_default = _from_environment("service_url")

    def _environment_value(self, name: str) -> Any:
        """Setting ``name`` from its variable (an empty one is unset), else its default."""
        trait = self.traits()[name]
        variable = trait.metadata["env"]
        raw = os.environ.get(variable, "").strip()
        if not raw:
            return trait.default_value
        try:
            return trait.validate(self, trait.from_string(raw))
        except (TraitError, ValueError):
            trait.refuse(raw, setting=variable)

    def to_config(self) -> OrchestratorConfig:
        """The orchestrator's settings, read and checked now; a wrong one raises SettingError."""
        self._check_cluster_options()
        values = {field.name: getattr(self, field.name) for field in fields(OrchestratorConfig)}
        values["data_dir"] = (
            Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()
        )
        if self.autoscale_maximum and self.autoscale_minimum > self.autoscale_maximum:
            raise SettingError(
                f"autoscale_minimum ({self.autoscale_minimum}) must not exceed "
                f"autoscale_maximum ({self.autoscale_maximum})"
            )
        return OrchestratorConfig(**values)

    def _check_cluster_options(self) -> None:
        """The cluster options against the keys of the chosen backend (the trait alone knows
        only the keys of all backends together). A backend class of one's own is held to
        those alone."""
        from .cluster.options import MANAGED_BACKENDS

        if self.cluster not in MANAGED_BACKENDS or self.cluster_backend_class is not None:
            return
        trait = self.traits()["cluster_options"]
        value = self.cluster_options
        if not trait.fits(value, backend=self.cluster):
            variable = trait.metadata["env"]
            came_from_variable = os.environ.get(variable, "").strip() == value.strip()
            trait.refuse(value, setting=variable if came_from_variable else "")

    def to_env(self) -> dict[str, str]:
        """These settings as the variables they fall back to (for a service started on their
        behalf): every setting that has one, so none can be left behind."""
        env = {}
        for name, trait in self.traits(env=lambda variable: variable is not None).items():
            value = getattr(self, name)
            if value is not None:
                env[trait.metadata["env"]] = _as_text(value)
        return env


def _as_text(value: object) -> str:
    """What the trait's ``from_string`` reads back as ``value``."""
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value)
