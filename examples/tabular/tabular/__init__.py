"""A small tabular-data package: load a CSV of measurements and prepare it for a model."""

__all__ = ["loader", "preprocessing"]
