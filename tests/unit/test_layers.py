"""Dependencies point one way: cli -> hpo/inference -> training -> evaluation -> data/models ->
checkpointing/tracking -> storage -> config -> the leaf modules (utils, errors, vocabulary, layout, provenance). Read from the source (every import, those inside functions too, so a
lazy import cannot hide an upward one); nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "dsm5_hpo"
LAYERS: tuple[tuple[str, ...], ...] = (
    # "dsm5_hpo": the package itself (its version)
    ("dsm5_hpo", "utils", "errors", "vocabulary", "layout", "provenance"),
    ("config",),
    ("storage",),
    ("checkpointing", "tracking"),
    ("data", "models"),
    ("evaluation",),
    ("training",),
    ("hpo", "inference"),
    ("cli",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """dsm5_hpo.hpo.study -> hpo; dsm5_hpo -> dsm5_hpo."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "dsm5_hpo" or name.startswith("dsm5_hpo.")]


def upward_imports(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(("dsm5_hpo", *path.relative_to(package).with_suffix("").parts))
        own = part_of(module.removesuffix(".__init__"))
        for line, target in imports(path):
            other = part_of(target)
            if other == own or other == "dsm5_hpo":
                continue
            if RANK[other] >= RANK[own]:
                wrong.append(f"{path.relative_to(package.parent)}:{line}: {own} imports {target} ({other})")
    return wrong


def test_every_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__", "py"}
    assert parts <= set(RANK), f"give these a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_no_module_imports_a_layer_above_its_own_or_beside_it() -> None:
    assert upward_imports() == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def f():\n    from dsm5_hpo.hpo.report import code_version\n",
            "training imports dsm5_hpo.hpo.report",
        ),
        ("import dsm5_hpo.hpo.study\n", "training imports dsm5_hpo.hpo.study"),
        ("from dsm5_hpo.inference import predictor\n", "training imports dsm5_hpo.inference"),
    ],
)
def test_the_check_sees_lazy_and_plain_imports(tmp_path: Path, source: str, message: str) -> None:
    package = tmp_path / "dsm5_hpo"
    (package / "training").mkdir(parents=True)
    (package / "training" / "bad.py").write_text(source)
    found = upward_imports(package)
    assert len(found) == 1 and message in found[0], found
