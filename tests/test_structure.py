"""The package structure (README "Layout", DESIGN section 3), read from the source with `ast`:
- a package imports only from packages to its left in LAYERS;
- no module imports a private name (`_x`) from another package;
- no import circle between modules (imports inside functions count: they only hide a circle);
- no import of project code inside a function (imports belong at the top, where the layering shows);
- no formatter pragma (`# fmt: skip` / `# fmt: off`): files keep the formatter's output (STYLE.md habit 2).
Each rule is also run on a small planted tree, so the checks are known to catch what they look for."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAYERS = (
    "common",
    "DECA",
    "facemodel",
    "preprocessing",
    "manipulator",
    "renderer",
    "postprocessing",
    "evaluation",
    "webapp",
)
PRAGMAS = ("# fmt: skip", "# fmt: off")  # squeezing lines is never a reason to leave the formatter


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (resolved to a module file where the name is one)
    names: tuple[str, ...]
    in_function: bool
    line: int


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the layered packages under `root`."""
    out = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(root: Path) -> list[Import]:
    """Every import of project code in the layered packages (module level and inside functions)."""
    mods = modules(root)
    found = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                pairs = [(f"{node.module}.{a.name}", (a.name,)) for a in node.names]
                pairs = [(t if t in mods else node.module, n) for t, n in pairs]
            elif isinstance(node, ast.Import):
                pairs = [(a.name, ()) for a in node.names]
            else:
                continue
            for target, names in pairs:
                if target.split(".")[0] in LAYERS:
                    found.append(Import(name, target, names, id(node) in in_function, node.lineno))
    return found


def layer_violations(root: Path) -> list[str]:
    out = []
    for imp in imports(root):
        src, dst = imp.module.split(".")[0], imp.target.split(".")[0]
        if LAYERS.index(dst) > LAYERS.index(src):
            out.append(f"{imp.module}:{imp.line} imports {imp.target} ({dst} is right of {src})")
    return out


def private_imports(root: Path) -> list[str]:
    return [
        f"{imp.module}:{imp.line} imports {n} from {imp.target}"
        for imp in imports(root)
        for n in imp.names
        if n.startswith("_") and not n.startswith("__") and imp.module.split(".")[0] != imp.target.split(".")[0]
    ]


def function_imports(root: Path) -> list[str]:
    return [
        f"{imp.module}:{imp.line} imports {imp.target} inside a function" for imp in imports(root) if imp.in_function
    ]


def cycles(root: Path) -> list[str]:
    """Import circles between modules, each as 'a -> b -> … -> a'."""
    graph: dict[str, set[str]] = {}
    for imp in imports(root):
        if imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
    out, state = [], {}  # state: 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                out.append(" -> ".join(stack[stack.index(nxt) :] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return out


def formatter_pragmas(root: Path) -> list[str]:
    """Every line of package code that opts out of the formatter."""
    return [
        f"{p.relative_to(root)}:{n}"
        for p in modules(root).values()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if any(pragma in line for pragma in PRAGMAS)
    ]


CHECKS = {
    "layers": layer_violations,
    "private": private_imports,
    "cycles": cycles,
    "function_imports": function_imports,
    "formatter_pragmas": formatter_pragmas,
}


@pytest.mark.parametrize("check", CHECKS)
def test_repository_structure(check):
    problems = CHECKS[check](REPO)
    assert not problems, f"{check}:\n  " + "\n  ".join(problems)


def test_readme_lists_the_layers_in_order():
    readme = (REPO / "README.md").read_text()
    assert " ← ".join(f"`{p}`" for p in LAYERS) in readme


def _plant(root: Path, files: dict[str, str]) -> Path:
    for package in LAYERS:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").touch()
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_each_check_catches_a_planted_violation(tmp_path):
    root = _plant(
        tmp_path,
        {
            "common/a.py": "from manipulator.b import helper\n",  # common must not import manipulator
            "manipulator/b.py": "from common.c import _secret\n\ndef helper():\n    from common import a\n",
            "common/c.py": "_secret = 1\nx = [1,  2]  " + PRAGMAS[0] + "\n",
        },
    )
    assert layer_violations(root) == ["common.a:1 imports manipulator.b (manipulator is right of common)"]
    assert private_imports(root) == ["manipulator.b:1 imports _secret from common.c"]
    assert function_imports(root) == ["manipulator.b:4 imports common.a inside a function"]
    assert cycles(root) == ["common.a -> manipulator.b -> common.a"]
    assert formatter_pragmas(root) == ["common/c.py:2"]
    clean = _plant(
        tmp_path / "clean",
        {"manipulator/b.py": "from common.c import helper\n", "common/c.py": "def helper():\n    pass\n"},
    )
    assert not any(check(clean) for check in CHECKS.values())


def test_every_script_finds_the_project_environment(tmp_path):
    """Every user-facing script sources scripts/env.sh, which puts the repository's .venv on PATH; without
    one (and without the packages on the active python) a script stops with one line saying what to run."""
    import shutil
    import subprocess

    scripts = REPO / "scripts"
    for script in scripts.glob("*.sh"):
        if script.name not in ("env.sh", "stage.sh"):
            assert 'source "$(dirname "$0")/env.sh"' in script.read_text(), script.name
    copy = tmp_path / "repo" / "scripts"
    copy.mkdir(parents=True)
    for name in ("env.sh", "preprocess.sh"):
        (copy / name).write_text((scripts / name).read_text())
    command = [shutil.which("bash"), str(copy / "preprocess.sh"), "video.mp4", "test"]
    tools = tmp_path / "bin"  # coreutils the scripts use, and no python at all
    tools.mkdir()
    for tool in ("dirname", "basename"):
        (tools / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(tools), "HOME": str(tmp_path)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "make setup" in proc.stderr


def test_environment_yml_has_what_make_setup_installs():
    """environment.yml (conda) lists every dependency of pyproject.toml (runtime and dev) and names every
    --no-deps install of the Makefile."""
    import re

    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    env_text = (REPO / "environment.yml").read_text()
    env = yaml.safe_load(env_text)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    name = lambda spec: re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].lower()  # noqa: E731
    missing = {name(w) for w in wanted} - {name(p) for p in pip}
    assert not missing, f"environment.yml lacks {sorted(missing)}"
    make = (REPO / "Makefile").read_text()
    no_deps = re.findall(r"^(?:MEDIAPIPE|FACENET|FAN|PORTRAITS|FER)\s*\?=\s*(\S+)", make, re.M)
    assert len(no_deps) == 5 and all(spec in env_text for spec in no_deps), no_deps
