"""Import direction: between the four layers, and between the wings of `vqtok.pipelines`.

Layers: cli -> pipelines -> vqtok -> kernels. Wings (see the `vqtok.pipelines` docstring):
a wing imports only wings of a lower rank; the shared modules at the top of `pipelines/`
(errors, progress, environment, config) import no wing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import vqtok.pipelines

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"kernels": 0, "vqtok": 1, "pipelines": 2, "cli": 3}  # a layer imports only lower ones
WINGS = {
    "data": 0,
    "jobs": 1,
    "training": 1,
    "compression": 2,
    "evaluation": 3,
    "bench": 4,
    "demo": 4,
}
SHARED = -1  # the rank of the modules at the top of pipelines/: they import no wing


def layer_of_module(name: str) -> int | None:
    for prefix, layer in (("vqtok.kernels", 0), ("vqtok.pipelines", 2), ("vqtok.cli", 3)):
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return 1 if name == "vqtok" or name.startswith("vqtok.") else None


def imported_modules(source: str) -> set[str]:
    """Absolute imports of `source`; `from a import b` gives "a.b" when b is one of the lazy
    exports of `vqtok.pipelines` (resolved to its module) and "a" otherwise."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "vqtok.pipelines":
                exports = vqtok.pipelines._EXPORTS
                names.update(f"vqtok.pipelines.{exports.get(a.name, a.name)}" for a in node.names)
    return names


def wing_of_path(path: Path) -> str | None:
    """The wing a file of pipelines/ belongs to; None for the shared top-level modules."""
    parts = path.relative_to(ROOT / "pipelines").parts
    return parts[0] if len(parts) > 1 else None


def wing_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[:2] != ["vqtok", "pipelines"] or len(parts) < 3 or parts[2] not in WINGS:
        return None
    return parts[2]


def wing_violations(source: str, wing: str | None) -> list[str]:
    """Imports in `source` (a module of `wing`, or shared when None) that break the wing rule."""
    rank = WINGS[wing] if wing else SHARED
    wrong = []
    for name in sorted(imported_modules(source)):
        target = wing_of_module(name)
        if target is not None and target != wing and WINGS[target] >= rank:
            wrong.append(name)
    return wrong


@pytest.mark.parametrize("top", sorted(LAYERS))
def test_imports_point_one_way(top):
    wrong = []
    for path in (ROOT / top).rglob("*.py"):
        for name in imported_modules(path.read_text()):
            layer = layer_of_module(name)
            if layer is not None and layer > LAYERS[top]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "imports must point cli -> pipelines -> vqtok -> kernels:\n" + "\n".join(
        wrong
    )


def test_every_pipelines_folder_is_a_known_wing():
    folders = {p.name for p in (ROOT / "pipelines").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(WINGS)


def test_wings_import_only_lower_wings():
    wrong = []
    for path in (ROOT / "pipelines").rglob("*.py"):
        if path.parent == ROOT / "pipelines" and path.name == "__init__.py":
            continue  # the lazy public API names every wing, as strings
        wing = wing_of_path(path)
        wrong += [f"{path.relative_to(ROOT)} ({wing or 'shared'}) imports {name}"
                  for name in wing_violations(path.read_text(), wing)]
    assert not wrong, "wings import only lower wings (see vqtok.pipelines):\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("wing", "source", "caught"),
    [
        (
            "data",
            "from vqtok.pipelines.jobs.encode import EncodeConfig",
            ["vqtok.pipelines.jobs.encode"],
        ),
        ("jobs", "import vqtok.pipelines.training.loop", ["vqtok.pipelines.training.loop"]),
        ("training", "from vqtok.pipelines.jobs import common", ["vqtok.pipelines.jobs"]),
        (
            "compression",
            "from vqtok.pipelines import evaluate_rd",
            ["vqtok.pipelines.evaluation.rd"],
        ),
        ("bench", "from vqtok.pipelines.demo import run_demo", ["vqtok.pipelines.demo"]),
        (None, "from vqtok.pipelines.data.media import prepare", ["vqtok.pipelines.data.media"]),
        (
            "jobs",
            "from vqtok.pipelines.data.media import prepare\n"
            "from vqtok.pipelines.errors import UsageError",
            [],
        ),
        ("evaluation", "from vqtok.pipelines import encode_shards, make_shards", []),
    ],
)
def test_the_wing_check_catches_a_deliberate_violation(wing, source, caught):
    assert wing_violations(source, wing) == caught
