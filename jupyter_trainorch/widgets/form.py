"""``SubmitForm``: pick a template, set params and resources, submit code as a job."""

from __future__ import annotations

import inspect
import json
import os
import shlex
import textwrap
from typing import Any

import ipywidgets as widgets

from ..client.transport import TrainOrchError
from ..spec import SpecError
from ._live import first_line, number

PRIORITIES = ("low", "normal", "high", "urgent")
_RESOURCE_FIELDS = ("gpus", "cpus", "memory", "retries", "timeout")
_WIDE = {"description_width": "6em"}


def job_source(source: str | None, fn: Any) -> tuple[str, dict[str, Any] | None]:
    """The code a form submits and, for ``fn``, the namespace its free variables come from."""
    if source is not None and fn is not None:
        raise SpecError("give SubmitForm either source or fn, not both")
    if fn is not None:
        if not inspect.isfunction(fn) or fn.__name__ == "<lambda>":
            raise SpecError(
                "fn must be a function defined with def, so that its source can be sent"
            )
        needed = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if needed:
            raise SpecError(
                f"{fn.__name__}() must run without arguments, but it needs {', '.join(needed)}; "
                "pass values as template params instead"
            )
        try:
            text = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            raise SpecError(
                f"the source of {fn.__name__}() cannot be read; define it in a cell or a file"
            ) from None
        # Run at the top level of the job, a nested function's closure cells become globals there.
        namespace = {**fn.__globals__, **inspect.getclosurevars(fn).nonlocals}
        return f"{text.rstrip()}\n{fn.__name__}()\n", namespace
    if source is None:
        raise SpecError(
            "a widget cannot read the cell it was created in, so give SubmitForm the code "
            "to run as source=... or fn=..."
        )
    if not str(source).strip():
        raise SpecError("the source is empty; give SubmitForm the code to run")
    return str(source), None


def _scalar(value: Any) -> str:
    """A template default as text that ``parse_set_values`` reads back as the same value."""
    if isinstance(value, str):
        from ..spec import parse_set_values

        return value if parse_set_values([f"x={value}"])["x"] == value else json.dumps(value)
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value)  # YAML reads JSON's true/null/[...] back unchanged
    return str(value)


def _memory(value: Any) -> str:
    if isinstance(value, int) and value > 0:
        for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return str(value or "")


def _priority_name(value: Any) -> str:
    from ..spec import priority_name

    return priority_name(value) if isinstance(value, int) else str(value or "normal")


class SubmitForm(widgets.VBox):
    """A form around ``submit``: template, params, resources, priority, retries, dependencies.

    It submits ``source`` (a string of Python) or a function ``fn`` (its source, then a
    call to it, with the kernel variables it reads). Each submitted job appears below the
    form as a ``JobWidget``; a mistake appears as one sentence in ``error_label``.
    """

    def __init__(
        self,
        template: str = "python-cell",
        source: str | None = None,
        fn: Any = None,
        *,
        name: str | None = None,
        transport: Any = None,
        **kwargs: Any,
    ) -> None:
        if transport is None:
            from ..client.transport import connect

            transport = connect()
        self.transport = transport
        self.problem = ""
        self.source: str | None = None
        self._namespace: dict[str, Any] | None = None
        try:
            self.source, self._namespace = job_source(source, fn)
        except SpecError as err:
            self.problem = first_line(err)
        self.jobs: list[Any] = []
        self.templates: dict[str, dict[str, Any]] = {}
        listing_error = ""
        try:
            listing = transport.templates()
            self.templates = {t["name"]: t for t in listing.get("templates") or []}
        except TrainOrchError as err:
            listing_error = first_line(err)
        self.templates.setdefault(template, {"name": template})

        self.template_dropdown = widgets.Dropdown(
            options=sorted(self.templates), value=template, description="template", style=_WIDE
        )
        self.description_label = widgets.Label("")
        self.name_text = widgets.Text(
            value=name or (fn.__name__ if inspect.isfunction(fn) else "cell"),
            description="name",
            style=_WIDE,
        )
        self.param_fields: dict[str, widgets.Text] = {}
        self.params_box = widgets.VBox([])
        self.extra_params = widgets.Text(
            description="params", placeholder="more key=value pairs, space separated", style=_WIDE,
            layout=widgets.Layout(width="36em"),
        )  # fmt: skip
        self.resource_fields = {
            key: widgets.Text(description=key, style=_WIDE, layout=widgets.Layout(width="14em"))
            for key in _RESOURCE_FIELDS
        }
        self.priority = widgets.Dropdown(
            options=PRIORITIES, value="normal", description="priority", style=_WIDE
        )
        self.after = widgets.Text(
            description="after", placeholder="job ids or names, comma separated", style=_WIDE,
            layout=widgets.Layout(width="36em"),
        )  # fmt: skip
        self.submit_button = widgets.Button(
            description="Submit", button_style="primary", icon="play"
        )
        self.submit_button.disabled = bool(self.problem)
        self.submit_button.on_click(lambda _b: self.submit())
        self.error_label = widgets.Label(self.problem or listing_error)
        self.error_label.style.text_color = "#c62828"
        self.error_label.add_class(
            "trainorch-wrap"
        )  # the panel's stylesheet: a long sentence wraps
        self.jobs_box = widgets.VBox([])
        fields = self.resource_fields
        super().__init__(
            [
                widgets.HBox([self.template_dropdown, self.description_label]),
                self.name_text,
                self.params_box,
                self.extra_params,
                widgets.HBox([fields["gpus"], fields["cpus"], fields["memory"]]),
                widgets.HBox([self.priority, fields["retries"], fields["timeout"]]),
                self.after,
                widgets.HBox(
                    [self.submit_button, self.error_label],
                    layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
                ),
                self.jobs_box,
            ],
            **kwargs,
        )
        self.template_dropdown.observe(
            lambda change: self._show_template(change["new"]), names="value"
        )
        self._show_template(template)

    def _show_template(self, name: str) -> None:
        """Fields for this template: one per param, its defaults as placeholders."""
        template = self.templates.get(name) or {}
        self.description_label.value = str(template.get("description") or "")
        for field in self.param_fields.values():
            field.close()
        self.param_fields = {
            key: widgets.Text(value=_scalar(value), description=key, style=_WIDE)
            for key, value in (template.get("params") or {}).items()
        }
        self.params_box.children = tuple(self.param_fields.values())
        resources = template.get("resources") or {}
        retries = template.get("retries") or {}
        defaults = {
            "gpus": number(resources.get("gpus", "")),
            "cpus": number(resources.get("cpus", "")),
            "memory": _memory(resources.get("memory")),
            "retries": number(retries.get("max", ""))
            if isinstance(retries, dict)
            else number(retries),
            "timeout": number(template.get("timeout")) if template.get("timeout") else "none",
        }
        for key, field in self.resource_fields.items():
            field.placeholder = defaults[key]
        priority = _priority_name(template.get("priority", "normal"))
        if priority not in self.priority.options:
            self.priority.options = (*PRIORITIES, priority)
        self.priority.value = priority

    def _variables_namespace(self) -> dict[str, Any]:
        if self._namespace is not None:
            return self._namespace
        from IPython import get_ipython

        shell = get_ipython()
        return shell.user_ns if shell is not None else {}

    def build_request(self) -> tuple[dict[str, Any], bytes]:
        """The submit body and the code package, as ``%%train`` builds them."""
        from ..client.code_package import package_cell
        from ..spec import parse_set_values

        if self.problem or self.source is None:
            raise SpecError(self.problem or "there is no code to submit")
        params: dict[str, Any] = {}
        for key, field in self.param_fields.items():
            params.update(parse_set_values([f"{key}={field.value}"]))
        try:
            extra = shlex.split(self.extra_params.value)
        except ValueError as err:
            raise SpecError(f"params: {err}") from None
        params.update(parse_set_values(extra))
        overrides: dict[str, Any] = {
            key: field.value.strip()
            for key, field in self.resource_fields.items()
            if field.value.strip()
        }
        overrides["priority"] = self.priority.value
        body = {
            "template": self.template_dropdown.value,
            "name": self.name_text.value.strip() or "cell",
            "params": params,
            "overrides": overrides,
            "source": self.source,
            "depends_on": [item.strip() for item in self.after.value.split(",") if item.strip()],
            "outputs": [],
            "workdir": os.getcwd(),
        }
        return body, package_cell(self.source, self._variables_namespace(), exclude=set(params))

    def submit(self) -> Any:
        """Submit the form; return the ``Job``, or None when ``error_label`` says why not."""
        from ..client.job import submit
        from .job import JobWidget

        self.error_label.value = ""
        self.submit_button.disabled = True
        try:
            body, package = self.build_request()
            job = submit(body, package, self.transport)
        except (SpecError, TrainOrchError) as err:
            self.error_label.value = first_line(err)
            return None
        finally:
            self.submit_button.disabled = bool(self.problem)
        self.jobs.append(job)
        self.jobs_box.children = (JobWidget(job, transport=self.transport), *self.jobs_box.children)
        return job

    def close(self) -> None:
        box = getattr(self, "jobs_box", None)
        for child in box.children if box is not None else ():
            child.close()
        super().close()
