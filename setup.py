"""moonshine-tfx: a TFX pipeline that trains, evaluates and ships Moonshine ASR."""

from setuptools import find_packages, setup

setup(
    name="moonshine-tfx",
    version="0.1.0",
    description=("TFX pipeline for the Moonshine speech-recognition model "
                 "(arXiv 2410.15608) in TensorFlow"),
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "tools", "tools.*", "components",
                                    "components.*", "models", "models.*"]),
    # models/assets/: the official BPE tokenizer.json and its licence.
    package_data={"": ["*.pbtxt", "*.json"], "models": ["assets/*"]},
    # Every distribution the product imports, at requirements.lock's pin
    # (tests/test_packaging.py checks both), so a bare `pip install .` says
    # what it needs; `make` and the Dockerfile install the whole lock.
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-transform==1.16.0",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-metadata==1.16.1",
        "ml-metadata==1.16.0",
        "apache-beam==2.74.0",
        "kfp==2.5.0",
        "tf-keras==2.16.0",
        "dill==0.3.1.1",
        "absl-py==1.4.0",
        "protobuf==3.20.3",
        "numpy==1.26.4",
        "pyyaml==6.0.4",
        "soundfile==0.12.1",
        "soxr==0.5.0.post1",
        "librosa==0.10.2.post1",
        "rapidfuzz==3.14.5",
        "matplotlib==3.9.2",
        "tokenizers==0.20.3",
        "safetensors==0.8.0",
        "h5py==3.16.0",
        # models/tflite.py edits the converted int8 file's weights in place.
        "flatbuffers==25.12.19",
        "tensorflow-io==0.37.1",
        "boto3==1.44.8",
        "botocore==1.44.8",
        # pipeline/beam_pool.py serves Beam's worker pool API; pipeline/tfjob.py
        # submits the multi-worker Trainer's TFJob.
        "grpcio==1.85.3",
        "kubernetes==26.1.0",
    ],
    entry_points={"console_scripts": ["moonshine-tfx=tools.cli:main"]},
)
