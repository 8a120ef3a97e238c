"""``c.TrainOrch.*`` and the ``TRAINORCH_*`` variables: every setting read, checked and passed
on by the one definition, and the classes they name actually built."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_trainorch.cluster import ClusterBackend, LocalBackend, LocalCUDABackend, make_backend
from jupyter_trainorch.orchestrator import OrchestratorHost
from jupyter_trainorch.orchestrator.feed import ChangeFeed
from jupyter_trainorch.orchestrator.jobservice import JobService
from jupyter_trainorch.orchestrator.tracking_bridge import TrackingBridge
from jupyter_trainorch.settings import SettingError, TrainOrch
from jupyter_trainorch.store import JobStore
from jupyter_trainorch.tracking import MlflowTracker


class RecordingStore(JobStore):
    built: list[str] = []

    def __init__(self, url: str) -> None:
        super().__init__(url)
        RecordingStore.built.append(url)


class RecordingTracker(MlflowTracker):
    """Built by the tracking process, which names the class it built."""


class RecordingBackend(ClusterBackend):
    pass


# For each setting with a variable: a value other than its default, as written in the
# variable and as the setting then holds it.
EXAMPLES: dict[str, tuple[str, object]] = {
    "cluster": ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    "workers": ("3", 3),
    "gpus_per_worker": ("2", 2),
    "slots_per_worker": ("7", 7),
    "cluster_idle_timeout": ("30.5", 30.5),
    "autoscale_maximum": ("6", 6),
    "autoscale_minimum": ("1", 1),
    "autoscale_grace": ("120", 120.0),
    "worker_failure_limit": ("5", 5),
    "worker_cooldown": ("60", 60.0),
    "container_engine": ("docker", "docker"),
    "cluster_options": ('{"workers": 3}', '{"workers": 3}'),
    "fair_share_half_life": ("3600", 3600.0),
    "gpu_quota": ("8", 8),
    "queue_quota": ("500", 500),
    "user_quotas": ('{"alice": {"gpus": 16}}', '{"alice": {"gpus": 16}}'),
    "group_quotas": ('{"vision": {"gpus": 32}}', '{"vision": {"gpus": 32}}'),
    "event_log": ("/var/log/trainorch/events.json", "/var/log/trainorch/events.json"),
    "alerts": ('[{"on": "failed", "to": "owner"}]', '[{"on": "failed", "to": "owner"}]'),
    "smtp_url": ("smtp://mail.example:25", "smtp://mail.example:25"),
    "deploy_hooks": (
        '[{"on": "alias:champion", "to": "command:/usr/local/bin/deploy.sh"}]',
        '[{"on": "alias:champion", "to": "command:/usr/local/bin/deploy.sh"}]',
    ),
    "preemption_priority": ("high", "high"),
    "preemption_min_runtime": ("60", 60.0),
    "checkpoint_root": ("/shared/checkpoints", "/shared/checkpoints"),
    "cluster_backend_class": ("test_settings.RecordingBackend", RecordingBackend),
    "data_dir": ("/srv/trainorch-data", "/srv/trainorch-data"),
    "db": (
        "postgresql+psycopg://db.example/trainorch",
        "postgresql+psycopg://db.example/trainorch",
    ),
    "store_class": ("test_settings.RecordingStore", RecordingStore),
    "lease_ttl": ("30", 30.0),
    "grace_period": ("0.5", 0.5),
    "max_infrastructure_retries": ("0", 0),
    "audit_interval": ("2.5", 2.5),
    "max_log_bytes": ("1000", 1000),
    "system_metrics_interval": ("0", 0.0),
    "mlflow": ("off", "off"),
    "mlflow_ui_url": ("http://mlflow.example:5000", "http://mlflow.example:5000"),
    "tracker_class": ("test_settings.RecordingTracker", RecordingTracker),
    "service_url": (
        "http://hub.example/services/trainorch/",
        "http://hub.example/services/trainorch/",
    ),
}


def _variables() -> dict[str, str]:
    return {
        name: trait.metadata["env"]
        for name, trait in TrainOrch.class_traits(env=lambda variable: variable is not None).items()
    }


def test_every_orchestrator_setting_has_a_variable_and_an_example():
    from dataclasses import fields

    from jupyter_trainorch.orchestrator import OrchestratorConfig

    orchestrator = {field.name for field in fields(OrchestratorConfig)}
    assert orchestrator <= set(_variables())
    assert set(EXAMPLES) == set(_variables())
    assert all(variable == f"TRAINORCH_{name.upper()}" for name, variable in _variables().items())


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_setting_falls_back_to_its_variable(name, monkeypatch):
    raw, expected = EXAMPLES[name]
    assert expected != TrainOrch.class_traits()[name].default_value
    monkeypatch.setenv(_variables()[name], raw)
    settings = TrainOrch()
    assert getattr(settings, name) == expected
    if name == "data_dir":
        assert settings.to_config().data_dir == Path(raw)
    elif name != "service_url":
        assert getattr(settings.to_config(), name) == expected


def test_jupyter_config_beats_the_variable_and_an_empty_variable_is_unset(monkeypatch):
    monkeypatch.setenv("TRAINORCH_WORKERS", "3")
    config = Config()
    config.TrainOrch.workers = 5
    assert TrainOrch(config=config).to_config().workers == 5
    monkeypatch.setenv("TRAINORCH_WORKERS", " ")
    assert TrainOrch().to_config().workers == 2


@pytest.mark.parametrize(
    ("variable", "raw", "sentence"),
    [
        ("TRAINORCH_WORKERS", "x", "TRAINORCH_WORKERS must be a whole number of at least 1, not 'x'"),
        ("TRAINORCH_WORKERS", "-1", "TRAINORCH_WORKERS must be a whole number of at least 1, not '-1'"),
        ("TRAINORCH_MAX_LOG_BYTES", "1.5", "TRAINORCH_MAX_LOG_BYTES must be a whole number of at least 0, not '1.5'"),
        ("TRAINORCH_GRACE_PERIOD", "nan", "TRAINORCH_GRACE_PERIOD must be a number of seconds of at least 0, not 'nan'"),
        ("TRAINORCH_LEASE_TTL", "inf", "TRAINORCH_LEASE_TTL must be a number of seconds of at least 1, not 'inf'"),
        ("TRAINORCH_CLUSTER", "lcoal", "TRAINORCH_CLUSTER must be 'local', 'local-cuda', 'gateway', 'kubernetes', 'slurm' or a scheduler address such as tcp://host:8786, not 'lcoal'"),
        ("TRAINORCH_STORE_CLASS", "jupyter_trainorch.tracking.MlflowTracker", "TRAINORCH_STORE_CLASS must be a subclass of 'jupyter_trainorch.store.sql.JobStore', not 'jupyter_trainorch.tracking.MlflowTracker'"),
    ],
)  # fmt: skip
def test_a_wrong_variable_is_one_sentence_naming_it(variable, raw, sentence, monkeypatch):
    monkeypatch.setenv(variable, raw)
    with pytest.raises(SettingError) as caught:
        TrainOrch().to_config()
    assert str(caught.value) == sentence


@pytest.mark.parametrize(
    ("name", "value", "sentence"),
    [
        ("workers", -1, "c.TrainOrch.workers must be a whole number of at least 1, not -1"),
        ("audit_interval", float("nan"), "c.TrainOrch.audit_interval must be a number of seconds of at least 0, not nan"),
        ("others_jobs", "everyone", "c.TrainOrch.others_jobs must be one of 'queue', 'hidden', not 'everyone'"),
    ],
)  # fmt: skip
def test_a_wrong_config_value_is_one_sentence_naming_it(name, value, sentence):
    config = Config()
    config.TrainOrch[name] = value
    with pytest.raises(SettingError) as caught:
        TrainOrch(config=config)
    assert str(caught.value) == sentence


def test_to_env_passes_every_setting_on(monkeypatch):
    """What a service started on a client's behalf reads back is what the client had."""
    config = Config()
    for name, (_, value) in EXAMPLES.items():
        config.TrainOrch[name] = value
    sent = TrainOrch(config=config)
    env = sent.to_env()
    assert set(env) == set(_variables().values())
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    received = TrainOrch()
    assert received.to_config() == sent.to_config()
    assert received.service_url == sent.service_url


def test_the_classes_named_by_settings_are_the_ones_built(tmp_path):
    """A store, tracker and cluster backend of the configured classes, on a real SQLite store."""
    RecordingStore.built.clear()
    settings = TrainOrch(
        data_dir=str(tmp_path),
        cluster="tcp://127.0.0.1:8786",
        store_class=RecordingStore,
        tracker_class=RecordingTracker,
        cluster_backend_class=RecordingBackend,
    )
    config = settings.to_config()

    host = OrchestratorHost(config)
    assert isinstance(host.store, RecordingStore)
    service = JobService(config)
    assert isinstance(service.store, RecordingStore)
    assert RecordingStore.built == [config.db_url, config.db_url]
    assert service.store.count_jobs() == 0  # a real store on the SQLite file
    service.store.close()

    bridge = TrackingBridge(host.store, ChangeFeed(), config)
    bridge.start()
    try:
        # MLflow calls are made by the tracking process: the class is built there.
        assert bridge.hooks.wait_ready(120) == "test_settings:RecordingTracker"
    finally:
        bridge.close()
        host.store.close()

    backend = make_backend(config)
    assert type(backend) is RecordingBackend and backend.address == "tcp://127.0.0.1:8786"


def test_without_a_backend_class_the_cluster_setting_chooses(tmp_path):
    remote = TrainOrch(data_dir=str(tmp_path), cluster="tcp://127.0.0.1:8786").to_config()
    assert type(make_backend(remote)) is ClusterBackend
    local = TrainOrch(data_dir=str(tmp_path), cluster="local", gpus_per_worker=1).to_config()
    backend = make_backend(local)
    assert type(backend) is LocalBackend
    assert (backend.n_workers, backend.gpus_per_worker) == (local.workers, 1)
    assert backend.state_file == tmp_path / "cluster.json"
    cuda = TrainOrch(data_dir=str(tmp_path), cluster="local-cuda").to_config()
    assert type(make_backend(cuda)) is LocalCUDABackend


def test_the_readme_lists_every_setting_once_with_its_variable():
    readme = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    for name, variable in _variables().items():
        rows = [
            line for line in readme if line.startswith(f"| `{variable}` | `c.TrainOrch.{name}` |")
        ]
        assert len(rows) == 1, variable
