"""Progress of a running data step, read off the file offsets of this
process tree (tools/read_progress.py), with a real child process reading
real files as a Beam worker would."""

import json
import os
import subprocess
import sys

import pytest

from tools import read_progress

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"),
                                reason="reads /proc")

# The child: open the first file, read `n` bytes, say so; on each line of
# stdin, read the next number of bytes (closing a file once it is read to
# its end and opening the next).
_READER = """
import sys
paths, handle, index = sys.argv[1:], None, -1
for line in sys.stdin:
    n = int(line)
    while n:
        if handle is None:
            index += 1
            handle = open(paths[index], "rb", buffering=0)  # offsets as read
        got = len(handle.read(n))
        n -= got
        if not got or handle.tell() == __import__("os").path.getsize(paths[index]):
            handle.close()
            handle = None
    print("ok", flush=True)
"""


def test_read_progress_counts_open_offsets_and_closed_files(tmp_path):
    paths = []
    for name in ("a", "b"):
        path = tmp_path / name
        path.write_bytes(b"x" * 1000)
        paths.append(os.path.realpath(path))
    step = read_progress.Input(
        node="Transform", files={p: 1000 for p in paths},
        passes={p: 1 for p in paths}, seconds_per_byte=0.36,
        utterances_per_byte=0.01)
    progress = read_progress.ReadProgress(step)
    child = subprocess.Popen([sys.executable, "-c", _READER, *paths],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        def read(n):
            child.stdin.write(f"{n}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
            return progress.sample()

        assert read(500) == 500  # a open at offset 500
        assert read(750) == 1250  # a read whole and closed, b at 250
        line = progress.line()
        assert line.startswith("Transform: 62% of its reading, ")
        # 1250 bytes: 12.5 utterances, 450 audio-seconds (0.125 h).
        assert "12 utterances, 0.12 audio-hours" in line and "s left" in line
    finally:
        child.kill()
        child.wait()


def test_passes_per_split_follow_the_components_configuration():
    assert read_progress._splits_read(  # pylint: disable=protected-access
        "Transform", {"splits_config": json.dumps(
            {"analyze": ["train"], "transform": ["train", "eval"]})}) == {
                "train": 2, "eval": 1}
    assert read_progress._splits_read(  # pylint: disable=protected-access
        "StatisticsGen", {"exclude_splits": json.dumps(["test"])}) == {
            "*": 1, "test": 0}
    assert read_progress._splits_read(  # pylint: disable=protected-access
        "Evaluator", {"example_splits": json.dumps(["eval"])}) == {"eval": 1}
    assert read_progress._splits_read("Trainer", {}) is None  # pylint: disable=protected-access
