"""HDF5 schemas, writers, readers, validators, xarray views and importers."""

from simsurrogate.data.errors import DataError

__all__ = ["DataError"]
