"""The submit request of a template file, rendered where the file and its inputs lie.

``trainorch submit FILE`` and the Airflow operator's ``template_file`` both send the
rendered spec plus a code package of the template's input files, so the service needs no
access to the submitter's disk.
"""

from __future__ import annotations

import base64
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..spec.errors import SpecError


def template_file_request(
    path: str | Path,
    *,
    params: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    name: str | None = None,
    depends_on: Iterable[str] = (),
    dependencies: Iterable[Any] = (),
    variables_file: str | Path | None = None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """The ``POST jobs`` body for the template at ``path``.

    ``variables_file``: a zip of captured variables (``variables.zip`` as ``trainorch
    export`` writes it) that a python template's source reads as its globals.
    """
    from ..package import build_package, read_package, template_files
    from ..spec import TemplateRegistry, render_spec

    template = TemplateRegistry().load_file(path)
    spec = render_spec(
        template,
        params=dict(params or {}),
        overrides=dict(overrides or {}),
        depends_on=list(depends_on),
        dependencies=list(dependencies),
        workdir=workdir,
        name=name,
    )
    variables: dict[str, bytes] = {}
    if variables_file is not None:
        try:
            variables = read_package(Path(variables_file).read_bytes())[0]
        except (OSError, zipfile.BadZipFile) as err:
            reason = err.strerror if isinstance(err, OSError) else "not a zip file"
            raise SpecError(
                f"variables_file {str(variables_file)!r} cannot be read ({reason})"
            ) from None
    body: dict[str, Any] = {"spec": spec.to_dict()}
    files = template_files(template)
    if files or variables:
        body["package"] = base64.b64encode(build_package(variables, files)).decode()
    return body
