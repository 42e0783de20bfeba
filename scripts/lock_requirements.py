"""Print the pip requirements (``name==version``) that poetry.lock pins for this interpreter.

Usage (see the Makefile's ``install`` target)::

    python scripts/lock_requirements.py --groups main,dev                  # everything, as constraints
    python scripts/lock_requirements.py --groups main,dev --without-torch  # all but torch's own closure
    python scripts/lock_requirements.py --only torch                       # torch==<locked version>

The dependency graph of poetry.lock is walked from the direct dependencies of the chosen groups
(``[project].dependencies`` is group ``main``, ``[dependency-groups]`` the others), evaluating
environment markers and extras for the running interpreter. ``--without-torch`` drops torch and every
package reachable *only* through torch (nvidia-*, triton, cuda-*, ...); packages that something else
also needs (filelock, jinja2, typing-extensions, ...) stay. Runs before anything is installed, so it
falls back to the copy of ``packaging`` vendored in pip.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    from packaging.version import Version
else:
    try:
        from packaging.markers import Marker
        from packaging.requirements import Requirement
        from packaging.specifiers import SpecifierSet
        from packaging.utils import canonicalize_name
        from packaging.version import Version
    except ImportError:  # a fresh venv: only pip's vendored copy exists
        from pip._vendor.packaging.markers import Marker
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.specifiers import SpecifierSet
        from pip._vendor.packaging.utils import canonicalize_name
        from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXCLUDED_WITH_TORCH = "torch"

# (name, extras, constraint alternatives (any may hold), marker) of one dependency edge
Edge = tuple[str, frozenset[str], list[SpecifierSet], str | None]


def poetry_constraint(text: str) -> list[SpecifierSet]:
    """Poetry's version constraint as alternatives: ``*``, bare ``1.2`` (== 1.2) and ``a || b``."""
    alternatives = []
    for part in text.split("||"):
        part = part.strip()
        if part in ("", "*"):
            part = ""
        elif part[0].isdigit():
            part = f"=={part}"
        alternatives.append(SpecifierSet(part))
    return alternatives


def root_edges(pyproject: dict[str, Any], groups: list[str]) -> list[Edge]:
    """The direct dependencies (PEP 508 strings) of the requested groups."""
    lines: list[str] = []
    for group in groups:
        if group == "main":
            lines += pyproject.get("project", {}).get("dependencies", [])
        else:
            for item in pyproject.get("dependency-groups", {}).get(group, []):
                if isinstance(item, str):  # {include-group = ...} entries are not used here
                    lines.append(item)
    edges: list[Edge] = []
    for line in lines:
        req = Requirement(line)
        marker = str(req.marker) if req.marker else None
        edges.append((canonicalize_name(req.name), frozenset(req.extras), [req.specifier], marker))
    return edges


def dependency_edges(package: dict[str, Any]) -> list[Edge]:
    """The ``[package.dependencies]`` of one lock entry as edges."""
    edges: list[Edge] = []
    for name, spec in package.get("dependencies", {}).items():
        for item in spec if isinstance(spec, list) else [spec]:
            if isinstance(item, str):
                item = {"version": item}
            edges.append(
                (
                    canonicalize_name(name),
                    frozenset(item.get("extras", [])),
                    poetry_constraint(item.get("version", "*")),
                    item.get("markers"),
                )
            )
    return edges


def marker_holds(marker: str | None, extras: frozenset[str]) -> bool:
    """Whether ``marker`` holds for this interpreter with any of the parent's ``extras``."""
    if not marker:
        return True
    return any(Marker(marker).evaluate({"extra": extra}) for extra in (extras or {""}))


def resolve(lock: dict[str, Any], roots: list[Edge], excluded: set[str]) -> dict[str, dict[str, Any]]:
    """Walk the lock from ``roots``; return the chosen lock entry per reachable package name.

    A name may have several lock entries (different versions under different markers): the
    chosen one satisfies every constraint that reached it. The walk is repeated until the choice
    is stable, because the dependencies followed depend on the entries chosen.
    """
    entries: dict[str, list[dict[str, Any]]] = {}
    for package in lock["package"]:
        entries.setdefault(canonicalize_name(package["name"]), []).append(package)
    chosen: dict[str, dict[str, Any]] = {}
    for _ in range(10):
        constraints: dict[str, list[list[SpecifierSet]]] = {}
        extras: dict[str, set[str]] = {}
        pending = [(edge, frozenset[str]()) for edge in roots]
        while pending:
            (name, wanted_extras, alternatives, marker), parent_extras = pending.pop()
            if name in excluded or not marker_holds(marker, parent_extras):
                continue
            if name not in entries:
                sys.exit(f"error: {name} is required but not in poetry.lock; run `make lock`")
            constraints.setdefault(name, []).append(alternatives)
            new_extras = set(wanted_extras) - extras.get(name, set())
            if name in extras and not new_extras:
                continue
            extras.setdefault(name, set()).update(wanted_extras)
            package = chosen.get(name, entries[name][0])
            own_extras = frozenset(extras[name])
            pending += [(edge, own_extras) for edge in dependency_edges(package)]
        new_chosen = {name: choose(name, entries[name], constraints[name]) for name in constraints}
        if new_chosen == chosen:
            return chosen
        chosen = new_chosen
    sys.exit("error: could not settle on one version per package in poetry.lock")


def choose(
    name: str, candidates: list[dict[str, Any]], constraints: list[list[SpecifierSet]]
) -> dict[str, Any]:
    """The highest locked version of ``name`` that satisfies every constraint."""
    fitting = [
        package
        for package in candidates
        if all(
            any(spec.contains(package["version"], prereleases=True) for spec in alt) for alt in constraints
        )
    ]
    if not fitting:
        sys.exit(f"error: no locked version of {name} satisfies every constraint; run `make lock`")
    return max(fitting, key=lambda package: Version(package["version"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="main", help="comma-separated groups (default: main)")
    parser.add_argument("--without-torch", action="store_true", help="leave out torch and its own closure")
    parser.add_argument("--only", help="print just this package's pin (e.g. torch)")
    parser.add_argument("--lock", type=Path, default=ROOT / "poetry.lock")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)

    lock = tomllib.loads(args.lock.read_text(encoding="utf-8"))
    pyproject = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))
    roots = root_edges(pyproject, [group.strip() for group in args.groups.split(",") if group.strip()])
    excluded = {EXCLUDED_WITH_TORCH} if args.without_torch else set()
    chosen = resolve(lock, roots, excluded)
    if args.only:
        only = canonicalize_name(args.only)
        if only not in chosen:
            sys.exit(f"error: {args.only} is not needed by groups {args.groups}")
        chosen = {only: chosen[only]}
    for name in sorted(chosen):
        print(f"{name}=={chosen[name]['version']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
