"""stisr: reference replication of low-resolution scene-text research."""

__version__ = "0.1.0"
