"""The error raised when a config cannot be mapped onto ConvNeXt."""


class SwapRefused(ValueError):
    """``swap_backbone`` cannot map this model; ``field`` names the config field that stops it.

    Args:
        field: Dotted path of the offending field, e.g. ``'model.neck.rfp_backbone'``.
        reason: What is wrong with it and, where there is one, what would work.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f'{field}: {reason}')
        self.field = field
        self.reason = reason
