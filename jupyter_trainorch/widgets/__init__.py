"""ipywidgets for notebooks: a live ``JobWidget``, a ``JobBoard`` table and a ``SubmitForm``.

Importing this package starts nothing; each widget connects (and starts its one
background thread) when it is created.
"""

from __future__ import annotations

from typing import Any

from .board import JobBoard
from .form import SubmitForm
from .job import JobWidget

__all__ = ["JobBoard", "JobWidget", "SubmitForm", "can_render", "show_job"]


def can_render() -> bool:
    """Whether a widget shown now reaches a front end: only a kernel has the comm channel
    (terminal IPython and scripts would just print the widget's text)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_job(job: Any) -> bool:
    """Display a live ``JobWidget`` for ``job``; False where widgets cannot render."""
    if not can_render():
        return False
    from IPython.display import display

    display(JobWidget(job))
    return True
