"""The one error the exporter raises: it names the module or operator that cannot be exported."""


class ExportError(RuntimeError):
    """A config, checkpoint or model part that cannot be exported, and why."""
