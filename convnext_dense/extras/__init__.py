"""Extras around the library, never imported by it: the ``make demo`` pipeline, the benchmarks and
the survey of ``swap_backbone`` over every stock mmdet / mmseg config (with its one-step trainer,
which the tests use too). They read the repository's ``configs/`` (:data:`REPO_CONFIGS`).
"""
from pathlib import Path

#: The repository's ``configs/`` directory (the extras run from a checkout).
REPO_CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
