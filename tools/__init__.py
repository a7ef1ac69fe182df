"""The user-facing tools: the `moonshine-tfx` CLI and what its commands run
(validate-data, transcribe, lineage, runs, the run summary and report), and
the ML Metadata readers they share. The pipeline itself is in pipeline/."""
