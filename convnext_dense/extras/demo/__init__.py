"""The embedded demo: a synthetic "shapes" dataset in COCO and ADE20K layouts for ``make demo``."""
from .scene import SHAPE_CLASSES, SHAPE_PALETTE
from .shapes import DEFAULT_OUT_DIR, generate_shapes_dataset, read_meta

__all__ = [
    'DEFAULT_OUT_DIR', 'SHAPE_CLASSES', 'SHAPE_PALETTE', 'generate_shapes_dataset', 'read_meta']
