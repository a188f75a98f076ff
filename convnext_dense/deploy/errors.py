"""The deploy extra's errors: what cannot be exported, and what is not installed."""
import importlib
from types import ModuleType


class ExportError(RuntimeError):
    """A config, checkpoint or model part that cannot be exported, and why."""


def import_deploy_module(name: str) -> ModuleType:
    """``import name`` (``'onnx'``, ``'onnxruntime'``, ...), or an error saying how to install it.

    Raises:
        ModuleNotFoundError: ``name`` is not installed; the message names the ``deploy`` extra.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{name} is not installed: ONNX export and inference need the deploy extra, "
            f"pip install -e '.[deploy]' (make install installs it)", name=name) from err
