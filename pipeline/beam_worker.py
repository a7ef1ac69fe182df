"""Imported first by every Beam worker process of a data step (Beam's
`--beam_plugin`, which pipeline.beam adds to multi-process runs).

A worker process reads the corpus and writes artifacts through tf.io.gfile
too (TFT, TFMA and our ExampleGen all do), so it needs the same filesystems
as the process that started the run: that process exports which ones
(pipeline.storage.FILESYSTEMS_VARIABLE) and the worker registers them here.
"""

import os

from pipeline import storage

_needed = os.environ.get(storage.FILESYSTEMS_VARIABLE, "")
if storage.S3 in _needed.split(","):
    storage.register_filesystems(f"{storage.S3}://")
    storage.exit_quietly_at_exit()
