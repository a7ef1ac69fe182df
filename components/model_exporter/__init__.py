"""ModelExporter: the trained weights plus decoding settings -> the serving model."""
