"""LibriSpeech ExampleGen: LibriSpeech-layout FLAC + transcripts -> tf.Examples.

`layout` is pure Python (scanning, transcript normalisation, audio loading,
quarantine reasons) and imports without TensorFlow; the component and executor
are imported lazily so `from components.librispeech_example_gen import layout`
stays light.
"""

__all__ = ["LibriSpeechExampleGen", "default_input_config", "make_custom_config",
           "Executor"]


def __getattr__(name):
    if name in ("LibriSpeechExampleGen", "default_input_config",
                "make_custom_config"):
        from components.librispeech_example_gen import component
        return getattr(component, name)
    if name == "Executor":
        from components.librispeech_example_gen import executor
        return executor.Executor
    raise AttributeError(name)
