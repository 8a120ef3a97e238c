"""Template verbs: list, show, validate (local, no server needed)."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_JOB_FAILED, EXIT_OK, PROG, _table


def cmd_templates_list(args: argparse.Namespace) -> int:
    from ..spec import TemplateRegistry

    registry = TemplateRegistry()
    templates = registry.list()
    rows = [[t.name, t.kind, t.description] for t in templates]
    print(_table(["NAME", "KIND", "DESCRIPTION"], rows))
    # Each sentence already names its file; sorting by path keeps the order stable.
    for _path, error in sorted(registry.errors.items()):
        print(f"{PROG}: skipped: {error}", file=sys.stderr)
    return EXIT_OK


def cmd_templates_show(args: argparse.Namespace) -> int:
    import yaml

    from ..spec import TemplateRegistry

    template = TemplateRegistry().get(args.name)
    print(yaml.safe_dump(template.to_dict(), sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def cmd_templates_validate(args: argparse.Namespace) -> int:
    from ..spec import SpecError, TemplateRegistry

    registry = TemplateRegistry()
    status = EXIT_OK
    for path in args.files:
        try:
            registry.load_file(path)
        except SpecError as err:
            print(str(err), file=sys.stderr)
            status = EXIT_JOB_FAILED
        else:
            print(f"{path}: ok")
    return status


# -- parser ----------------------------------------------------------------------------------
