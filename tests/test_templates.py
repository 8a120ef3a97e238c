"""YAML job templates: loading, errors with file and line, extends, rendering."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jupyter_trainorch.spec import (
    JobSpec,
    SpecError,
    Template,
    TemplateRef,
    TemplateRegistry,
    parse_set_values,
    render_spec,
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert "Traceback" not in message
    return message


@pytest.fixture
def registry() -> TemplateRegistry:
    return TemplateRegistry([])


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    return folder


# --- builtins -------------------------------------------------------------------------------


def test_builtins_load(registry):
    assert registry.names() == ["command", "python-cell", "torch"]
    assert {t.name for t in registry.list()} == {"command", "python-cell", "torch"}
    assert registry.errors == {}
    for template in registry.list():
        assert template.description
        assert template.version == 1


def test_builtin_python_cell(registry):
    cell = registry.get("python-cell")
    assert cell.kind == "python"
    assert (cell.resources.gpus, cell.resources.cpus) == (0, 1.0)
    assert cell.retry.max_retries == 0
    assert cell.priority == 100
    spec = render_spec(cell, source="x = 1", user="ana")
    assert isinstance(spec, JobSpec)
    assert (spec.name, spec.kind, spec.source, spec.user) == (
        "python-cell",
        "python",
        "x = 1",
        "ana",
    )
    assert spec.template == cell.ref() == TemplateRef(name="python-cell", version=1, hash=cell.hash)


def test_builtin_torch_extends_python_cell(registry):
    torch = registry.get("torch")
    assert torch.extends == "python-cell"
    assert torch.kind == "python"
    assert torch.resources.gpus == 1 and torch.resources.cpus == 4
    assert torch.resources.memory == 16 * 2**30
    assert (torch.retry.max_retries, torch.retry.backoff) == (2, 10.0)
    assert torch.params == {"lr": 0.0003, "epochs": 5, "batch_size": 32}
    assert torch.env == {"TORCH_DISTRIBUTED_DEBUG": "OFF"}
    spec = render_spec(torch, source="train()")
    assert spec.resources.gpus == 1 and spec.params["lr"] == 0.0003


def test_builtin_command_needs_cmd(registry):
    command = registry.get("command")
    assert command.kind == "command"
    with pytest.raises(SpecError) as err:
        render_spec(command)
    message = one_sentence(err)
    assert "'{{ cmd }}'" in message and "no param 'cmd'" in message and "--set cmd=" in message
    spec = render_spec(command, params=parse_set_values(["cmd=nvidia-smi -L"]))
    assert (spec.kind, spec.command) == ("command", "nvidia-smi -L")


def test_unknown_template_lists_available(registry):
    with pytest.raises(SpecError) as err:
        registry.get("xyz")
    assert one_sentence(err) == "unknown template 'xyz' (available: command, python-cell, torch)"


# --- extends --------------------------------------------------------------------------------


def test_extends_merges_mappings_child_wins(user_dir):
    write(
        user_dir,
        "base.yaml",
        """
        version: 1
        kind: command
        command: echo base
        resources: {gpus: 1, cpus: 2, memory: 8GiB}
        retries: {max: 3, backoff: 5s}
        timeout: 1h
        env: {A: a, B: b}
        params: {lr: 0.1, epochs: 3}
        outputs: [model, history]
        """,
    )
    write(
        user_dir,
        "child.yaml",
        """
        version: 1
        extends: base
        resources: {gpus: 2}
        retries: {max: 1}
        env: {B: child, C: c}
        params: {epochs: 10}
        outputs: [model]
        """,
    )
    child = TemplateRegistry([user_dir]).get("child")
    assert child.kind == "command" and child.command == "echo base"
    assert (child.resources.gpus, child.resources.cpus, child.resources.memory) == (
        2,
        2.0,
        8 * 2**30,
    )
    assert (child.retry.max_retries, child.retry.backoff) == (1, 5.0)
    assert child.timeout == 3600
    assert child.env == {"A": "a", "B": "child", "C": "c"}
    assert child.params == {"lr": 0.1, "epochs": 10}
    assert child.outputs == ["model"]
    assert child.extends == "base"


def test_extends_retries_int_replaces_mapping(user_dir):
    write(user_dir, "a.yaml", "version: 1\nextends: torch\nretries: 5\n")
    template = TemplateRegistry([user_dir]).get("a")
    assert template.retry.max_retries == 5 and template.retry.backoff == 2.0


def test_extends_cycle(user_dir):
    write(user_dir, "a.yaml", "version: 1\nextends: b\n")
    write(user_dir, "b.yaml", "version: 1\ndescription: b\nextends: a\n")
    registry = TemplateRegistry([user_dir])
    with pytest.raises(SpecError) as err:
        registry.get("a")
    message = one_sentence(err)
    assert "cycle" in message and "a -> b -> a" in message
    assert "b.yaml, line 3" in message
    assert [t.name for t in registry.list()] == ["command", "python-cell", "torch"]
    assert set(registry.errors) == {str(user_dir / "a.yaml"), str(user_dir / "b.yaml")}


def test_extends_unknown_parent(user_dir):
    write(user_dir, "t.yaml", "version: 1\ndescription: x\nextends: nope\n")
    with pytest.raises(SpecError) as err:
        TemplateRegistry([user_dir]).get("t")
    message = one_sentence(err)
    assert message.startswith(f"{user_dir / 't.yaml'}, line 3: ")
    assert "'nope'" in message and "available: " in message


def test_user_template_can_extend_the_builtin_it_overrides(user_dir):
    write(user_dir, "torch.yaml", "version: 1\nextends: torch\nresources: {gpus: 8}\n")
    torch = TemplateRegistry([user_dir]).get("torch")
    assert torch.resources.gpus == 8 and torch.resources.cpus == 4
    assert torch.path == str(user_dir / "torch.yaml")


# --- error sentences ------------------------------------------------------------------------


BAD_FILES = {
    "gpus": (
        "version: 1\nkind: python\nresources:\n  cpus: 2\n  gpus: two\n",
        5,
        ["resources.gpus", "whole number", "'two'"],
    ),
    "unknown key": (
        "version: 1\nname: t\ngpu: 1\n",
        3,
        ["'gpu' is not a template field", "(did you mean 'resources'?)"],
    ),
    "misspelt key": ("version: 1\nprioirty: high\n", 2, ["(did you mean 'priority'?)"]),
    "priority": ("version: 1\n\npriority: highest\n", 3, ["priority", "'highest'", "urgent"]),
    "memory": ("version: 1\nresources: {memory: 16 gigs}\n", 2, ["resources.memory", "16GiB"]),
    "retries": ("version: 1\nretries:\n  max: 1\n  maxx: 2\n", 4, ["retries.maxx"]),
    "env": ("version: 1\nenv:\n  A: [1, 2]\n", 3, ["env.A"]),
    "kind": ("version: 1\nkind: shell\n", 2, ["kind must be one of python, command"]),
    "output name": ("version: 1\noutputs:\n  - model\n  - my-model\n", 4, ["'my-model'"]),
    "yaml syntax": ("version: 1\nresources: {gpus: 1\nkind: python\n", 3, ["not valid YAML"]),
    "bad indent": ("version: 1\nenv:\n  A: 1\n B: 2\n", 4, ["not valid YAML"]),
    "newer version": (
        "# a comment\nversion: 3\n",
        2,
        ["written for a newer jupyter-trainorch (schema version 3; this one reads up to 2)"],
    ),
    "jinja syntax": ("version: 1\ncommand: echo {{ lr \n", 2, ["command", "syntax"]),
    "command kind without command": ("version: 1\nkind: command\n", 2, ["sets no command"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_error_names_file_line_and_field(user_dir, case):
    text, line, fragments = BAD_FILES[case]
    path = write(user_dir, "t.yaml", text)
    with pytest.raises(SpecError) as err:
        TemplateRegistry([]).load_file(path)
    message = one_sentence(err)
    assert message.startswith(f"{path}, line {line}: "), message
    for fragment in fragments:
        assert fragment in message


def test_missing_version_names_file(user_dir):
    path = write(user_dir, "t.yaml", "name: t\nkind: python\n")
    with pytest.raises(SpecError) as err:
        TemplateRegistry([]).load_file(path)
    message = one_sentence(err)
    assert message.startswith(f"{path}: ") and "'version'" in message


def test_error_in_parent_names_parent_file(user_dir):
    write(user_dir, "base.yaml", "version: 1\nresources: {gpus: -1}\n")
    child = write(user_dir, "child.yaml", "version: 1\nextends: base\n")
    registry = TemplateRegistry([user_dir])
    assert "base.yaml, line 2: resources.gpus" in registry.errors[str(user_dir / "base.yaml")]
    with pytest.raises(SpecError) as err:
        registry.load_file(child)
    assert one_sentence(err) == (
        f"{child}, line 2: extends 'base', but {user_dir / 'base.yaml'} could not be loaded"
    )


def test_from_dict_errors_use_origin(registry):
    with pytest.raises(SpecError) as err:
        registry.from_dict({"resources": {"gpus": "x"}}, origin="cell 3")
    assert one_sentence(err).startswith("cell 3: resources.gpus")
    template = registry.from_dict({"name": "quick", "extends": "torch", "params": {"lr": 1}})
    assert template.path is None and template.params["lr"] == 1 and template.resources.gpus == 1


# --- legacy schema and hash -----------------------------------------------------------------


def test_legacy_v0_is_migrated(user_dir):
    path = write(
        user_dir,
        "old.yaml",
        """
        version: 0
        name: old
        gpus: 2
        cpus: 8
        memory: 32GiB
        retries: 3
        defaults: {lr: 0.01}
        """,
    )
    template = TemplateRegistry([]).load_file(path)
    assert (template.resources.gpus, template.resources.cpus) == (2, 8.0)
    assert template.resources.memory == 32 * 2**30
    assert template.retry.max_retries == 3
    assert template.params == {"lr": 0.01}
    assert template.version == 1


def test_legacy_v0_errors_keep_their_line(user_dir):
    path = write(user_dir, "old.yaml", "version: 0\ncpus: 1\ngpus: lots\n")
    with pytest.raises(SpecError) as err:
        TemplateRegistry([]).load_file(path)
    assert one_sentence(err).startswith(f"{path}, line 3: resources.gpus")


def test_hash_stable_and_changed_by_edit(user_dir):
    text = "version: 1\nname: h\nresources: {gpus: 1}\nparams: {lr: 0.1}\n"
    path = write(user_dir, "h.yaml", text)
    first = TemplateRegistry([user_dir]).get("h")
    again = TemplateRegistry([user_dir]).get("h")
    assert len(first.hash) == 16 and first.hash == again.hash
    same = write(user_dir / "copy", "other.yaml", "# same content\n" + text)
    assert TemplateRegistry([]).load_file(same).hash == first.hash
    path.write_text(text.replace("0.1", "0.2"), encoding="utf-8")
    assert TemplateRegistry([user_dir]).get("h").hash != first.hash


# --- rendering ------------------------------------------------------------------------------


def test_render_layering(user_dir):
    path = write(
        user_dir,
        "job.yaml",
        """
        version: 1
        name: "train-{{ lr }}"
        kind: command
        command: python train.py --lr {{ lr }} --epochs {{ epochs }}
        resources: {gpus: 2, memory: 8GiB}
        retries: {max: 2, backoff: 30s}
        timeout: 2h
        priority: high
        env: {RUN_NAME: "run-{{ lr }}", KEEP: "1"}
        outputs: [model]
        params: {lr: 0.1, epochs: 5}
        """,
    )
    template = TemplateRegistry([]).load_file(path)
    plain = render_spec(template)
    assert plain.name == "train-0.1"
    assert plain.command == "python train.py --lr 0.1 --epochs 5"
    assert plain.resources.cpus == 1.0  # model default, not set by the template
    assert (plain.priority, plain.timeout, plain.outputs) == (200, 7200.0, ["model"])

    spec = render_spec(
        template,
        params={"lr": 0.5},
        overrides={"gpus": 4, "cpus": 3, "priority": "urgent", "retries": 5, "timeout": "10m",
                   "env": {"EXTRA": "{{ epochs }}"}, "memory": None},
        depends_on=["job-1"],
        outputs=["model", "loss"],
        workdir="/tmp/w",
    )  # fmt: skip
    assert spec.params == {"lr": 0.5, "epochs": 5}
    assert spec.command == "python train.py --lr 0.5 --epochs 5"
    assert (spec.resources.gpus, spec.resources.cpus, spec.resources.memory) == (4, 3.0, 8 * 2**30)
    assert (spec.retry.max_retries, spec.retry.backoff) == (5, 30.0)
    assert (spec.priority, spec.timeout) == (300, 600.0)
    assert spec.env == {"RUN_NAME": "run-0.5", "KEEP": "1", "EXTRA": "5"}
    assert (spec.depends_on, spec.outputs, spec.workdir) == (["job-1"], ["model", "loss"], "/tmp/w")
    assert spec.name == "train-0.5"
    assert render_spec(template, overrides={"name": "x-{{ epochs }}"}).name == "x-5"
    assert render_spec(template, overrides={"name": "x"}, name="y").name == "y"
    assert JobSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gpus": "two"}, "--gpus must be a whole number"),
        ({"cpus": "many"}, "--cpus must be a number"),
        ({"memory": "lots"}, "--memory must be a size"),
        ({"priority": "asap"}, "--priority must be one of"),
        ({"timeout": "soon"}, "--timeout must be a duration"),
        ({"retries": -1}, "--retries must be a whole number"),
    ],
)
def test_bad_override_names_the_flag(registry, overrides, expected):
    with pytest.raises(SpecError) as err:
        render_spec(registry.get("torch"), overrides=overrides)
    assert one_sentence(err).startswith(expected)


def test_undefined_param_sentence(registry):
    template = registry.from_dict({"command": "python train.py --lr {{ lr }}"})
    with pytest.raises(SpecError) as err:
        render_spec(template)
    assert one_sentence(err) == (
        "command uses '{{ lr }}' but no param 'lr' is set (use --set lr=… or lr=… after the flags)"
    )
    env_template = registry.from_dict({"extends": "torch", "env": {"TAG": "{{ tag }}"}})
    with pytest.raises(SpecError) as err:
        render_spec(env_template)
    assert one_sentence(err).startswith("env.TAG uses '{{ tag }}'")


@pytest.mark.parametrize(
    "command",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ lr.__class__.__init__.__globals__ }}",
    ],
)
def test_sandbox_escape_raises_spec_error(registry, command):
    template = registry.from_dict({"command": command, "params": {"lr": 1}})
    with pytest.raises(SpecError) as err:
        render_spec(template)
    assert one_sentence(err).startswith("command ")


def test_other_render_errors_are_one_sentence(registry):
    template = registry.from_dict({"command": "echo {{ 1 / zero }}", "params": {"zero": 0}})
    with pytest.raises(SpecError) as err:
        render_spec(template)
    assert one_sentence(err).startswith("command could not be rendered")


def test_quote_filter(registry):
    template = registry.from_dict({"command": "echo {{ msg | quote }}"})
    spec = render_spec(template, params={"msg": "a b; rm x"})
    assert spec.command == "echo 'a b; rm x'"


def test_env_keeps_the_written_text(user_dir):
    path = write(user_dir, "e.yaml", "version: 1\nenv: {A: off, B: 0.10, C: 7, D: ~}\n")
    assert TemplateRegistry([]).load_file(path).env == {"A": "off", "B": "0.10", "C": "7", "D": ""}


def test_kind_defaults(registry):
    assert registry.from_dict({"command": "ls"}).kind == "command"
    assert registry.from_dict({"source": "x = 1"}).kind == "python"
    assert registry.from_dict({"extends": "command"}).kind == "command"


# --- parse_set_values -----------------------------------------------------------------------


def test_parse_set_values():
    values = parse_set_values(
        ["lr=0.1", "epochs=3", "amp=true", "sizes=[1,2]", "tag=abc", "decay=1e-4", "msg=a=b", "e="]
    )
    assert values == {
        "lr": 0.1, "epochs": 3, "amp": True, "sizes": [1, 2], "tag": "abc", "decay": 1e-4,
        "msg": "a=b", "e": "",
    }  # fmt: skip
    assert isinstance(values["lr"], float) and isinstance(values["epochs"], int)


@pytest.mark.parametrize("pair", ["lr0.1", "=1", "1lr=2", "my-key=3"])
def test_parse_set_values_rejects(pair):
    with pytest.raises(SpecError) as err:
        parse_set_values([pair])
    assert one_sentence(err) == f"{pair!r} is not a key=value pair"


# --- registry -------------------------------------------------------------------------------


def test_search_path_overrides_builtin_and_later_path_wins(tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"
    write(first, "torch.yaml", "version: 1\nname: torch\nresources: {gpus: 2}\n")
    write(first, "mine.yml", "version: 1\ndescription: from first\n")
    write(second, "mine.yaml", "version: 1\ndescription: from second\n")
    registry = TemplateRegistry([first, str(second)])
    assert registry.names() == ["command", "mine", "python-cell", "torch"]
    torch = registry.get("torch")
    assert torch.resources.gpus == 2 and torch.extends is None and torch.params == {}
    assert registry.get("mine").description == "from second"


def test_broken_user_file_is_recorded_not_fatal(user_dir):
    write(user_dir, "good.yaml", "version: 1\nextends: torch\n")
    broken = write(user_dir, "broken.yaml", "version: 1\nresources: {gpus: 1\n")
    registry = TemplateRegistry([user_dir])
    names = [t.name for t in registry.list()]
    assert names == ["command", "good", "python-cell", "torch"]
    assert list(registry.errors) == [str(broken)]
    assert "broken.yaml, line" in registry.errors[str(broken)]
    assert "\n" not in registry.errors[str(broken)]


def test_default_search_paths(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    config = tmp_path / "config"
    write(config / "trainorch" / "templates", "shared.yaml", "version: 1\ndescription: config\n")
    write(env_dir, "shared.yaml", "version: 1\ndescription: env\n")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config))
    monkeypatch.setenv("TRAINORCH_TEMPLATE_PATH", f"{tmp_path / 'missing'}:{env_dir}")
    registry = TemplateRegistry()
    assert registry.get("shared").description == "env"
    assert registry.errors == {}


def test_load_file_job_yaml_with_set_values(tmp_path, registry):
    path = write(tmp_path, "job.yaml", "version: 1\ncommand: python train.py --lr {{ lr }}\n")
    template = registry.load_file(path)
    assert isinstance(template, Template)
    assert (template.name, template.kind, template.path) == ("job", "command", str(path))
    spec = render_spec(template, params=parse_set_values(["lr=0.1"]))
    assert spec.kind == "command"
    assert spec.command == "python train.py --lr 0.1"
    assert spec.name == "job" and spec.template.name == "job"


def test_inputs_resolve_against_the_template_folder(tmp_path, registry):
    write(tmp_path / "proj" / "data", "a.csv", "x\n")
    path = write(tmp_path / "proj", "job.yaml", "version: 1\ninputs: [data/*.csv]\n")
    template = registry.load_file(path)
    assert template.inputs == [str(tmp_path / "proj" / "data" / "*.csv")]
    assert template.input_files() == [str(tmp_path / "proj" / "data" / "a.csv")]


def test_a_set_value_that_aliases_expand_is_refused():
    levels = ["[1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        "[" + ", ".join([f"*l{i}"] * 9) + "]" for i in range(5)
    ]
    bomb = "[" + ", ".join(f"&l{i} {level}" for i, level in enumerate(levels)) + "]"
    with pytest.raises(SpecError) as err:
        parse_set_values([f"x={bomb}"])
    assert "expands to more than 10000 values" in one_sentence(err)


def test_secret_pairs_are_literal_or_taken_from_the_environment(monkeypatch):
    from jupyter_trainorch.spec import parse_secret_pairs

    monkeypatch.setenv("FROM_ENV", "0123")
    assert parse_secret_pairs(["A=007", "FROM_ENV", "B=x=y"]) == {
        "A": "007", "FROM_ENV": "0123", "B": "x=y",
    }  # fmt: skip
    for pair, fragment in [("1A=x", "is not a name"), ("MISSING_VAR", "no environment variable")]:
        with pytest.raises(SpecError) as err:
            parse_secret_pairs([pair])
        assert fragment in one_sentence(err)


def test_rendering_allows_few_filters_and_bounded_output(registry):
    template = registry.get("command")
    for name, fragment in [
        ("{{ 'x' | center(10**9) }}", "No filter named 'center'"),
        ("{{ ('x' * 1000) | replace('x', 'y' * 1000) }}", "builds a value longer than"),
        ("{{ 'x' * 10**7 }}", "builds a value longer than"),
        ("{{ 2**99999999 }}", "uses a number that is too large"),
    ]:
        with pytest.raises(SpecError) as err:
            render_spec(template, params={"cmd": "x"}, name=name)
        assert fragment in one_sentence(err), name
    assert (
        render_spec(template, params={"cmd": "x"}, name="{{ 'run' | upper }}-{{ 2**10 }}").name
        == "RUN-1024"
    )


def test_template_inputs_stay_inside_the_templates_folder(tmp_path):
    folder = tmp_path / "templates"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "ok.csv").write_text("1\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    (folder / "data" / "link.csv").symlink_to(tmp_path / "outside.txt")
    (folder / "ship.yaml").write_text(
        "version: 1\nkind: command\ncommand: ls\ninputs: [data/*.csv]\n"
    )
    (folder / "escape.yaml").write_text(
        "version: 1\nkind: command\ncommand: ls\ninputs: [../outside.txt]\n"
    )
    registry = TemplateRegistry([folder])
    assert [Path(p).name for p in registry.get("ship").input_files()] == ["ok.csv"]
    assert (
        "must be a path inside the template's folder"
        in registry.errors[str(folder / "escape.yaml")]
    )


def test_secret_env_in_a_template_is_rendered_and_shown_by_name_only(registry):
    template = registry.from_dict({"command": "train", "secret_env": {"TOKEN": "t-{{ 0 + 1 }}"}})
    spec = render_spec(template, overrides={"secret_env": {"EXTRA": "e-2"}})
    assert spec.secret_env == {"TOKEN": "t-1", "EXTRA": "e-2"}
    assert template.to_dict()["secret_env"] == {"TOKEN": "***"}
