"""The TFLiteEvaluator component: the on-device variants scored like the SavedModel."""
