"""The floor plan holds: imports run one way (import-linter's contracts in .importlinter, over every package of
the repository), the external libraries with one importer each are imported there only, no folder is a grab-bag,
no function under trainer/ is too long to read at once, and no signature takes more than eight parameters."""
import ast
import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())
MAX_MODULES = 12            # modules at one level of a folder
MAX_LINES = 60              # lines of one function under trainer/
MAX_PARAMETERS = 8          # parameters of one function or method (self and cls aside), outside tests
# external modules that one module of mnemo owns (import-linter cannot forbid a subpackage of an external package)
OWNERS = {"torch.distributed": "trainer/engine/distributed.py", "nvidia.dali": "data_pipeline/loading/dali_pipeline.py"}


def _sources():
    for pkg in PACKAGES:
        yield from (ROOT / pkg).rglob("*.py")


def test_every_package_is_a_room_of_the_import_contracts():
    lint = configparser.ConfigParser()
    lint.read(ROOT / ".importlinter")
    roots = lint["importlinter"]["root_packages"].split()
    layers = {name.strip().split(".")[0] for line in lint["importlinter:contract:layers"]["layers"].split()
              for name in line.split("|") if name.strip()}
    assert set(PACKAGES) == set(roots) == layers, (PACKAGES, roots, layers)
    assert {"core", "trainer", "exemplars", "data_pipeline", "mnemo", "benchmarks", "analysis"} <= set(PACKAGES)


def test_owned_libraries_are_imported_by_their_owner_only():
    wrong = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                for lib, owner in OWNERS.items():
                    if (name == lib or name.startswith(lib + ".")) and path.relative_to(ROOT).as_posix() != owner:
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name} (owner: {owner})")
    assert not wrong, wrong


def test_no_signature_takes_more_than_eight_parameters():
    wide = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                n = len(names) - (names[:1] in (["self"], ["cls"])) + bool(a.vararg) + bool(a.kwarg)
                if n > MAX_PARAMETERS:
                    wide.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    assert not wide, wide


def test_imports_run_one_way():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_no_folder_holds_more_than_a_dozen_modules():
    crowded = {}
    for pkg in PACKAGES:
        for folder in [ROOT / pkg, *(p for p in (ROOT / pkg).rglob("*") if p.is_dir())]:
            modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
            if len(modules) > MAX_MODULES:
                crowded[str(folder.relative_to(ROOT))] = len(modules)
    assert not crowded, crowded


def test_no_function_under_trainer_is_longer_than_sixty_lines():
    long = []
    for path in (ROOT / "trainer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
