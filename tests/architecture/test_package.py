"""The package's shape: what installs, what imports with torch alone, what is never loaded."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("kernels", "vqtok", "pipelines", "cli")
MODULE_OF_DIR = {"kernels": "vqtok.kernels", "pipelines": "vqtok.pipelines", "cli": "vqtok.cli"}


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
    blocked = [
        "webdataset",
        "soundfile",
        "av",
        "PIL",
        "typer",
        "rich",
        "torchaudio",
        "torchvision",
        "constriction",
    ]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import vqtok, vqtok.kernels, vqtok.pipelines.bench.kernels\n"
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
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            found += [f"imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("eval", "exec", "torch.load", "torch.jit.load"):
                found.append(f"calls {func}")
            for kw in node.keywords:
                if kw.arg in ("allow_pickle", "weights_only") and ast.unparse(kw.value) == (
                    "True" if kw.arg == "allow_pickle" else "False"
                ):
                    found.append(f"calls {func} with {kw.arg}={ast.unparse(kw.value)}")
    return [f"{path.relative_to(ROOT)}: {f}" for f in found]


def test_no_unsafe_loaders_anywhere():
    # Checkpoints and code files come from strangers: nothing may unpickle or execute them.
    offenders = [
        u for top in LAYERS for path in (ROOT / top).rglob("*.py") for u in unsafe_uses(path)
    ]
    assert not offenders, offenders


def test_the_unsafe_loader_scan_catches_what_it_names():
    bad = ROOT / "tests" / "_unsafe_example.py"
    bad.write_text(
        "import pickle\nimport numpy as np\nnp.load('x', allow_pickle=True)\neval('1')\n"
    )
    try:
        assert len(unsafe_uses(bad)) == 3
    finally:
        bad.unlink()


PACKAGE_DIRS = ("vqtok", "kernels", "pipelines", "cli")


def test_a_built_wheel_ships_every_module(tmp_path):
    # A non-editable install sees only what the wheel holds; build one from a copy of the
    # tree so that the checkout gains no build/ or .egg-info folders.
    src = tmp_path / "src"
    for name in (*PACKAGE_DIRS, "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(
            ROOT / name,
            src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}),
        )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("vqtok-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "/".join((*MODULE_OF_DIR.get(top, top).split("."), *path.relative_to(ROOT / top).parts))
        for top in PACKAGE_DIRS
        for path in (ROOT / top).rglob("*.py")
    }
    assert expected - shipped == set()


def test_pipelines_keeps_few_modules_at_its_top_and_tests_mirror_the_package():
    top = sorted(p.name for p in (ROOT / "pipelines").glob("*.py"))
    assert len(top) <= 10, top
    assert not list((ROOT / "tests").glob("test_*.py")), (
        "tests live in folders that mirror the package"
    )
    for folder in ("kernels", "core", "cli", "hardening", *(f"pipelines/{w}" for w in
                   ("data", "jobs", "training", "compression", "evaluation", "bench", "demo"))):
        assert list((ROOT / "tests" / folder).glob("test_*.py")), folder
