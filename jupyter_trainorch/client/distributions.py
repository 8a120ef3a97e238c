"""The installed distributions behind the modules a cell uses, and their versions here.

The kernel records them in the code package (``meta/kernel_versions.json``) so that the
worker can say when it runs the job with other versions. Listing which distribution
provides which module reads every installed distribution's file list (~0.4 s), so the
map is kept until the import path or a package folder on it changes, and computed in the
background after ``%load_ext``.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable

from .. import package

_Key = tuple[tuple[str, ...], tuple[tuple[str, int], ...]]
# (import path and package folders, distributions by top-level module, versions read so far)
_cache: tuple[_Key, dict[str, list[str]], dict[str, str | None]] | None = None
_cache_lock = threading.Lock()


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _installed() -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """(distributions by top-level module name, the versions looked up so far)."""
    from importlib import metadata

    key: _Key = (tuple(sys.path), package._environment_fingerprint())
    global _cache
    with _cache_lock:
        if _cache is not None and _cache[0] == key:
            return _cache[1], _cache[2]
        providers = {name: list(dists) for name, dists in metadata.packages_distributions().items()}
        for line in package.environment_snapshot().splitlines():
            name, _, version = line.partition("==")
            if version and not name.startswith("#"):
                # An editable install (``pip install -e``) may declare no top-level module:
                # its distribution's name stands for its package.
                providers.setdefault(_normalized(name), [name])
        _cache = (key, providers, {})
        return providers, _cache[2]


def provided_modules() -> set[str]:
    """Top-level module names that installed distributions provide."""
    return set(_installed()[0])


def kernel_versions(modules: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` for the distributions providing ``modules`` (dotted
    names are taken by their top level; modules of no installed distribution are left out)."""
    from importlib import metadata

    providers, versions = _installed()
    found: dict[str, str] = {}
    for top in sorted({module.partition(".")[0] for module in modules}):
        for distribution in providers.get(top, []):
            if distribution not in versions:
                try:
                    versions[distribution] = metadata.version(distribution)
                except metadata.PackageNotFoundError:
                    versions[distribution] = None
            version = versions[distribution]
            if version is not None:
                found[distribution] = version
    return found


def warm_environment() -> None:
    """Compute the package snapshot and this map in the background, off the first
    ``%%train``'s path (one thread: they read the same files)."""
    threading.Thread(target=_installed, name="trainorch-snapshot", daemon=True).start()
