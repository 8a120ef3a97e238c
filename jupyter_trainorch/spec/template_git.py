"""Templates kept in a git repository: the commit a job's template came from, a template's
text at an older commit, and template path entries given as ``file://`` URLs of a clone.

Git is asked through ``tracking.git.run_git`` (a subprocess with a timeout): a missing or
slow git only means no commit is recorded, never a job that cannot be submitted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import SpecError

_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_BUILTIN_DIR = os.path.realpath(Path(__file__).parent / "builtin")


def split_path_list(text: str) -> list[str]:
    """``TRAINORCH_TEMPLATE_PATH`` split at ``os.pathsep``, keeping a URL's ``scheme://`` whole."""
    entries: list[str] = []
    for part in text.split(os.pathsep):
        if entries and part.startswith("//") and re.fullmatch(r"[A-Za-z][\w+.-]*", entries[-1]):
            entries[-1] += ":" + part
        else:
            entries.append(part)
    return entries


def search_path(entry: str | Path) -> Path:
    """A template path entry as a folder: a path, or a ``file://`` URL of a local clone."""
    text = str(entry).strip()
    if "://" not in text:
        return Path(text).expanduser()
    url = urlparse(text)
    if url.scheme != "file" or url.netloc not in ("", "localhost"):
        raise SpecError(
            f"the template path entry {text!r} is not a local folder: clone the repository "
            "and put the clone's folder (or its file:// URL) on the template path"
        )
    return Path(unquote(url.path))


def _git(folder: str, *args: str) -> str | None:
    from ..tracking.git import run_git

    return run_git(folder, *args)


def git_state(path: str | None) -> tuple[str | None, bool | None]:
    """The HEAD commit of the work tree holding the template file ``path`` and whether the
    file differs from it; ``(None, None)`` outside git.

    The builtin templates are left out: they belong to the installed package, whose own
    checkout (an editable install) says nothing about the user's templates.
    """
    if not path or os.path.realpath(os.path.dirname(path)) == _BUILTIN_DIR:
        return None, None
    folder, name = os.path.split(os.path.abspath(path))
    commit = (_git(folder, "rev-parse", "--verify", "--quiet", "HEAD") or "").strip()
    if not _COMMIT.match(commit):
        return None, None
    # Untracked or ignored counts as dirty too: the commit does not hold this file.
    status = _git(folder, "status", "--porcelain", "--untracked-files=all", "--ignored", "--", name)
    if status is None:
        return commit, None
    return commit, bool(status.strip())


def text_at_commit(path: str, commit: str) -> str:
    """The template file ``path`` as it was at ``commit`` of its repository."""
    folder, name = os.path.split(os.path.abspath(path))
    if _git(folder, "rev-parse", "--show-toplevel") is None:
        raise SpecError(f"{path} is not in a git repository, so it has no commit {commit!r}")
    if commit.startswith("-"):  # never let a "commit" reach git as an option
        raise SpecError(f"{commit!r} is not a commit of the git repository holding {path}")
    full = (_git(folder, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}") or "").strip()
    if not full:
        raise SpecError(f"{commit!r} is not a commit of the git repository holding {path}")
    # ``./`` makes the path relative to ``folder`` rather than to the repository's top.
    text = _git(folder, "show", f"{full}:./{name}")
    if text is None:
        raise SpecError(f"{path} did not exist at commit {commit}")
    return text
