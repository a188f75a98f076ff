"""The model: architecture table, backbone, blocks, layer ids and the layer-decay constructor.

Submodules are imported by name (``convnext_dense.model.backbone``); this package imports nothing,
so the weights layer can read :mod:`.archs` without a circle.
"""
