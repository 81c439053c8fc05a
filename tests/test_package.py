"""The package's shape: import direction, what installs, what imports with torch alone."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"kernels": 0, "vqtok": 1, "pipelines": 2, "cli": 3}  # a layer imports only lower ones
MODULE_OF_DIR = {"kernels": "vqtok.kernels", "pipelines": "vqtok.pipelines", "cli": "vqtok.cli"}


def layer_of_module(name: str) -> int | None:
    for prefix, layer in (("vqtok.kernels", 0), ("vqtok.pipelines", 2), ("vqtok.cli", 3)):
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return 1 if name == "vqtok" or name.startswith("vqtok.") else None


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("top", sorted(LAYERS))
def test_imports_point_one_way(top):
    wrong = []
    for path in (ROOT / top).rglob("*.py"):
        for name in imported_modules(path):
            layer = layer_of_module(name)
            if layer is not None and layer > LAYERS[top]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "imports must point cli -> pipelines -> vqtok -> kernels:\n" + "\n".join(wrong)


def test_every_package_directory_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, module in {"vqtok": "vqtok", **MODULE_OF_DIR}.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((module, *rel)))
    assert found == listed


def test_vqtok_and_kernels_import_with_torch_alone():
    # The GPU machines have torch and triton but none of the media or CLI packages.
    blocked = ["webdataset", "soundfile", "av", "PIL", "typer", "rich", "torchaudio", "torchvision", "constriction"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import vqtok, vqtok.kernels, vqtok.pipelines.bench_kernels\n"
        "import torch\n"
        "model = vqtok.create_model(vqtok.list_models()[0])\n"
        "print(vqtok.kernels.nearest_code(torch.randn(5, 3), torch.randn(4, 3))[0].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_every_lazy_pipeline_export_resolves():
    import vqtok.pipelines as pipelines

    for name in pipelines.__all__:
        assert getattr(pipelines, name) is not None


UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}


def unsafe_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("eval", "exec", "torch.load", "torch.jit.load"):
                found.append(f"calls {func}")
            for kw in node.keywords:
                if kw.arg in ("allow_pickle", "weights_only") and ast.unparse(kw.value) == ("True" if kw.arg == "allow_pickle" else "False"):
                    found.append(f"calls {func} with {kw.arg}={ast.unparse(kw.value)}")
    return [f"{path.relative_to(ROOT)}: {f}" for f in found]


def test_no_unsafe_loaders_anywhere():
    # Checkpoints and code files come from strangers: nothing may unpickle or execute them.
    offenders = [u for top in LAYERS for path in (ROOT / top).rglob("*.py") for u in unsafe_uses(path)]
    assert not offenders, offenders


def test_the_unsafe_loader_scan_catches_what_it_names():
    bad = ROOT / "tests" / "_unsafe_example.py"
    bad.write_text("import pickle\nimport numpy as np\nnp.load('x', allow_pickle=True)\neval('1')\n")
    try:
        assert len(unsafe_uses(bad)) == 3
    finally:
        bad.unlink()
