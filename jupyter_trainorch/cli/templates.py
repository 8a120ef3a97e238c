"""Template verbs: list, show, validate, diff, migrate (local, no server needed)."""

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


def cmd_templates_diff(args: argparse.Namespace) -> int:
    from ..spec import TemplateRegistry
    from ..spec.template_diff import diff

    # Like diff(1): 0 when the same, 1 when they differ (2, an error, comes from main).
    text = diff(TemplateRegistry(), args.a, args.b)
    print(text, end="")
    return EXIT_JOB_FAILED if text else EXIT_OK


def cmd_templates_migrate(args: argparse.Namespace) -> int:
    import os
    import shutil

    from ..spec.template_migrate import SCHEMA_VERSION, migrate_file

    migration = migrate_file(args.file)
    if not migration.changes:
        print(f"{args.file}: already schema version {SCHEMA_VERSION}, nothing to migrate")
        return EXIT_OK
    if not args.write:
        # The template to stdout (ready for ``> new.yaml``), what changed to stderr.
        print(migration.text, end="")
        for change in migration.changes:
            print(f"{PROG}: {change}", file=sys.stderr)
        return EXIT_OK
    backup = f"{args.file}.bak"
    shutil.copy2(args.file, backup)
    temporary = f"{args.file}.migrating"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(migration.text)
    shutil.copymode(backup, temporary)
    os.replace(temporary, args.file)  # never a half-written template
    for change in migration.changes:
        print(change)
    print(f"{args.file}: migrated to schema version {SCHEMA_VERSION} (the old file is {backup})")
    return EXIT_OK


# -- parser ----------------------------------------------------------------------------------
