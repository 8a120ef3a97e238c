"""Errors a user can make in a spec, template or flag: one readable sentence each."""


class SpecError(ValueError):
    """Invalid job input. ``str(err)`` is a single sentence fit to show a user as is."""
