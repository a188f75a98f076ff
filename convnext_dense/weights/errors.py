"""The error of a checkpoint that cannot be used as asked, and of a converter not installed."""
import importlib
from types import ModuleType


class CheckpointError(ValueError):
    """A checkpoint that is damaged, would run code, is not a ConvNeXt, or does not fit the model.

    Its message names the file and says what to do, so ``tools/train.py`` and ``tools/test.py``
    print it as one ``error:`` line instead of a traceback.
    """


def import_transformers() -> ModuleType:
    """``import transformers``, or an error saying how to install it.

    Reading Hugging Face weights needs only safetensors; writing a model transformers loads
    (``save_pretrained``) needs transformers itself.

    Raises:
        ModuleNotFoundError: transformers is not installed; the message names the ``hf`` extra.
    """
    try:
        return importlib.import_module('transformers')
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "transformers is not installed: writing a Hugging Face model folder needs the hf "
            "extra, pip install -e '.[hf]' (make install installs it)", name='transformers'
        ) from err
