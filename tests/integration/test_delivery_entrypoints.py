"""Every image's entrypoint imports with only what its Dockerfile puts in the image.

No Docker engine runs here, so the image is emulated: a temp folder gets exactly the files
the Dockerfile COPYs (as the image's /app), and a subprocess runs with an import guard that
refuses any third-party distribution outside the transitive closure of that image's
requirements.txt (and any project module the image does not contain). Then the entrypoint
module is imported by name and, for stages, ``--help`` is run. A stage whose CLI is not
written yet is skipped, with the reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STAGES = ("datagen", "split", "features", "train_xgb", "train_iforest", "evaluate", "register")


def _load_build_images():
    spec = importlib.util.spec_from_file_location("build_images", REPO / "scripts/build_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_images", module)
    spec.loader.exec_module(module)
    return module


bi = _load_build_images()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: Path) -> set[str]:
    """Normalised names of the requirements and everything they depend on (no extras)."""
    todo = [Requirement(ln.strip()) for ln in requirements.read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")]  # fmt: skip
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: the guard will block its modules
        for raw in dist.requires or []:
            dep = Requirement(raw)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    return seen


def module_owners() -> dict[str, list[str]]:
    return {mod: [_norm(d) for d in dists]
            for mod, dists in importlib.metadata.packages_distributions().items()}  # fmt: skip


GUARD = r"""
import importlib.abc, importlib.machinery, json, os, sys
cfg = json.loads(os.environ["IMAGE_GUARD"])
root = cfg["root"]
sys.path[:] = [root] + [p for p in sys.path if p and os.path.abspath(p) != cfg["repo"]]
allowed, blocked = set(cfg["allowed_modules"]), set(cfg["blocked_modules"])
project = set(cfg["project"])

class ImageGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in project:
            rel = name.replace(".", os.sep)
            if not (os.path.isdir(os.path.join(root, rel)) or
                    os.path.isfile(os.path.join(root, rel + ".py"))):
                raise ModuleNotFoundError(f"{name} is not in the image", name=name)
            return importlib.machinery.PathFinder.find_spec(name, path or [root])
        if top in blocked and top not in allowed:
            raise ModuleNotFoundError(
                f"{top} is not in the image's requirements.txt (nor a dependency of them)",
                name=name)
        return None

sys.meta_path.insert(0, ImageGuard())
"""


def stage_image(dockerfile: Path, target: str | None, dest: Path) -> None:
    """Copy the build-context sources the Dockerfile COPYs into ``dest`` (the image's /app)."""
    for source in bi.copy_sources(dockerfile.read_text(), target):
        src = REPO / source.rstrip("/")
        if source.startswith("serving/model"):
            continue  # the baked bundle: not needed to import the code
        if source.endswith("requirements.txt"):
            continue
        out = dest / source.rstrip("/")
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
        elif src.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)


def run_in_image(tmp_path: Path, dockerfile: Path, target: str | None, requirements: Path,
                 code: str, timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    root = tmp_path / "app"
    root.mkdir(parents=True)
    stage_image(dockerfile, target, root)
    allowed_dists = closure(requirements)
    owners = module_owners()
    allowed = sorted(m for m, d in owners.items() if set(d) & allowed_dists)
    blocked = sorted(m for m, d in owners.items() if not set(d) & allowed_dists)
    cfg = {"root": str(root), "repo": str(REPO), "allowed_modules": allowed,
           "blocked_modules": blocked, "project": ["components", "serving", "pipelines", "scripts"]}  # fmt: skip
    env = {"IMAGE_GUARD": json.dumps(cfg), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "VAR_DIR": str(tmp_path / "var"), "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", GUARD + code], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_guard_blocks_what_the_image_lacks(tmp_path):
    """The emulation must be able to fail: the split image has no XGBoost and no other stage."""
    code = (
        "import pyarrow\n"
        "for name in ('xgboost', 'components.train_xgb', 'pipelines'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError as e:\n"
        "        print('blocked', name)\n"
    )
    out = run_in_image(tmp_path, REPO / "components/split/Dockerfile", None,
                       REPO / "components/split/requirements.txt", code)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["blocked xgboost", "blocked components.train_xgb",
                                          "blocked pipelines"]  # fmt: skip


@pytest.mark.parametrize("stage", STAGES)
def test_stage_entrypoint_imports_with_its_image_deps(stage, tmp_path):
    main = REPO / f"components/{stage}/__main__.py"
    if not main.exists():
        pytest.skip(f"components/{stage}/__main__.py not written yet")
    code = (
        "import importlib, runpy\n"
        f"importlib.import_module('components.{stage}.__main__')\n"
        f"sys.argv = ['{stage}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('components.{stage}', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as e:\n"
        "    sys.exit(e.code)\n"
    )
    out = run_in_image(tmp_path, REPO / f"components/{stage}/Dockerfile", None,
                       REPO / f"components/{stage}/requirements.txt", code)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage:" in out.stdout


@pytest.mark.parametrize(("target", "module"), [("lambda", "serving.lambda_handler"),
                                                 ("server", "serving.app")])  # fmt: skip
def test_serving_entrypoints_import_with_serving_deps(target, module, tmp_path):
    if not (REPO / f"{module.replace('.', '/')}.py").exists():
        pytest.skip(f"{module} not written yet")
    # Import only: the Lambda module builds the app (and loads a bundle) at import, so it is
    # given MODEL_DIR=<missing> and must fail with the loader's error, not an ImportError.
    code = (
        "import importlib, os\n"
        "os.environ['MODEL_DIR'] = os.path.join(os.getcwd(), 'serving', 'model')\n"
        "try:\n"
        f"    importlib.import_module('{module}')\n"
        "except ImportError:\n"
        "    raise\n"
        "except Exception as e:\n"
        "    print('import ok; app start failed without a bundle:', type(e).__name__)\n"
        "else:\n"
        "    print('import ok')\n"
    )
    out = run_in_image(tmp_path, REPO / "serving/Dockerfile", target,
                       REPO / "serving/requirements.txt", code)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("import ok")
    if target == "server":  # the factory the image's CMD names exists
        check = run_in_image(tmp_path / "factory", REPO / "serving/Dockerfile", target,
                             REPO / "serving/requirements.txt",
                             "import serving.app as a; assert callable(a.create_app)")  # fmt: skip
        assert check.returncode == 0, check.stderr[-2000:]
