"""Property tests: whatever a user types after ``%%train`` and whatever a template file
holds, the answer is a job spec or one sentence (UsageError / SpecError), never another
exception from our internals."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from jupyter_trainorch.client.magics import build_request
from jupyter_trainorch.contract.jobs import SubmitRequest
from jupyter_trainorch.spec import JobSpec, SpecError, TemplateRegistry
from jupyter_trainorch.spec.render import render_spec
from jupyter_trainorch.spec.templates import TEMPLATE_FIELDS

PROPERTY = settings(
    max_examples=300, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip

FLAGS = ["--gpus", "--cpus", "--memory", "--priority", "--retries", "--timeout", "--name",
         "--template", "--after", "--out", "--env", "--secret-env", "--experiment",
         "--register-model", "--wait", "--sweep", "--bogus", "-x", "--"]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(
        [
            "1",
            "0",
            "-1",
            "2**70",
            "nan",
            "inf",
            "1e400",
            "16GiB",
            "lots",
            "high",
            "asap",
            "15m",
            "",
            "'",
            '"',
            "a=b",
            "A=1",
            "=",
            "{{ x }}",
            "x" * 300,
            "torch",
            "command",
            "python-cell",
            "\x00",
            "é",
            "lr=1e-3,3e-4",
        ]
    ),  # fmt: skip
    st.text(max_size=20),
)
WORDS = st.lists(st.one_of(st.sampled_from(FLAGS), VALUES), max_size=8)


@pytest.fixture(scope="module")
def registry():
    return TemplateRegistry([])


def _render_request(registry: TemplateRegistry, body: dict) -> JobSpec:
    """What the service does with a magic's request (JobService.submit), minus the store."""
    SubmitRequest.model_validate(body)
    return render_spec(
        registry.get(str(body["template"])),
        params=body.get("params") or {},
        overrides=body.get("overrides") or {},
        source=body.get("source"),
        depends_on=list(body.get("depends_on") or []),
        outputs=body.get("outputs"),
        workdir=body.get("workdir"),
        name=body.get("name"),
    )


@PROPERTY
@given(words=WORDS)
def test_any_train_line_is_a_request_or_one_sentence(registry, words):
    line = " ".join(json.dumps(w) if " " in w else w for w in words)
    try:
        body, _, _ = build_request(line, "x = 1\n", 3)
    except UsageError as err:
        assert str(err) and "\n" not in str(err) and "Traceback" not in str(err)
        return
    body.pop("sweep", None)
    try:
        spec = _render_request(registry, body)
    except SpecError as err:
        assert str(err) and "\n" not in str(err)
        return
    except Exception as err:  # the contract model refusing the request is also one sentence
        if type(err).__name__ == "ValidationError":
            return
        raise
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["{{ lr }}", "{{ 'x' * 10**7 }}", "/etc/passwd", "../up", "16GiB", "2h"]),
)  # fmt: skip
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(["gpus", "max", "lr", "A", "1x"]), st.text(max_size=8)),
            inner,
            max_size=4,
        ),  # fmt: skip
    ),
    max_leaves=12,
)
TEMPLATES = st.dictionaries(
    st.one_of(st.sampled_from(TEMPLATE_FIELDS), st.text(max_size=10)), YAML_VALUES, max_size=8
)


@PROPERTY
@given(document=TEMPLATES, params=st.dictionaries(st.sampled_from(["lr", "cmd"]), SCALARS))
def test_any_template_file_loads_and_renders_or_is_one_sentence(tmp_path_factory, document, params):
    folder = tmp_path_factory.mktemp("templates")
    path = folder / "candidate.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    registry = TemplateRegistry([folder])
    if str(path) in registry.errors:
        assert "\n" not in registry.errors[str(path)]
        return
    try:
        template = registry.load_file(path)
        spec = render_spec(template, params=params)
    except SpecError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert all(not name.startswith(("/", "..")) for name in template.inputs)
    JobSpec.from_dict(spec.to_dict())


@PROPERTY
@given(text=st.text(max_size=300))
def test_any_text_as_a_template_file_is_a_template_or_one_sentence(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("raw")
    (folder / "raw.yaml").write_text(text)
    registry = TemplateRegistry([folder])
    for message in registry.errors.values():
        assert "\n" not in message
