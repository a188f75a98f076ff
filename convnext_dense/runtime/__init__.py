"""What the tools run on: config loading, command-line options, device adaptation, data checks,
strict checkpoint loading for the Runner, checkpoint safety and inference helpers.

Nothing here changes a process-wide setting on import; :mod:`convnext_dense.model_checkpoints` is
the one switch that does.
"""
