"""The error of a checkpoint that cannot be used as asked."""


class CheckpointError(ValueError):
    """A checkpoint that is damaged, would run code, is not a ConvNeXt, or does not fit the model.

    Its message names the file and says what to do, so ``tools/train.py`` and ``tools/test.py``
    print it as one ``error:`` line instead of a traceback.
    """
