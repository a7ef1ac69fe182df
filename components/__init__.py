"""Custom TFX components of moonshine-tfx."""
