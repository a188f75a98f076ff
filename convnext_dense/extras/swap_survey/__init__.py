"""The survey of ``swap_backbone`` over every stock config (``tools/sweep_swap_backbone.py``) and
its one-step trainer (also used by the swap tests)."""
