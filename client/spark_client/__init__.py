"""Spark VTuber client: chat sources -> turn loop -> speech -> avatar, all models reached through Triton."""

__version__ = "0.1.0"
