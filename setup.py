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
    # Versions are pinned in requirements.lock (installed by `make`); these
    # name what the code imports so a bare `pip install .` says what it needs.
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-transform==1.16.0",
        "tensorflow-model-analysis==0.47.1",
        "ml-metadata==1.16.0",
        "tf-keras==2.16.0",
        "dill==0.3.1.1",
        "soundfile==0.12.1",
        "soxr==0.5.0.post1",
        "librosa==0.10.2.post1",
        "matplotlib==3.9.2",
        "tokenizers==0.20.3",
    ],
    entry_points={"console_scripts": ["moonshine-tfx=tools.cli:main"]},
)
