"""modelhost: SageMaker-compatible model hosting on one machine."""

__version__ = "0.1.0"
