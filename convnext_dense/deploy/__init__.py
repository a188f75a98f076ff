"""Export the backbone, UperNet and (Cascade) Mask R-CNN to ONNX; run them with onnxruntime.

``tools/export.py`` writes ``model.onnx`` plus ``deploy.json`` (:mod:`.export`);
``tools/onnx_demo.py`` runs it (:mod:`.runtime`). The graphs use only standard ONNX operators
(``NonMaxSuppression``, ``RoiAlign`` among them), so a plain ``onnxruntime`` runs them. Needs the
``deploy`` extra (``pip install -e .[deploy]``).
"""
from .errors import ExportError
from .export import export_model
from .runtime import OnnxModel

__all__ = ['ExportError', 'export_model', 'OnnxModel']
