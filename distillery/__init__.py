"""Distillery's Python client: `from distillery import Client`."""

from distillery.client import Client, DistilleryError

__version__ = "0.1.0"
__all__ = ["Client", "DistilleryError", "__version__"]
