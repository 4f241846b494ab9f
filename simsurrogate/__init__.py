"""simsurrogate: learned physics surrogates on one data layer and one training stack."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("simsurrogate")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load"]


def load(path, map_location="cpu"):
    """Rebuild a trained model from a checkpoint alone (see :mod:`simsurrogate.checkpoint`)."""
    from simsurrogate.checkpoint import load as _load

    return _load(path, map_location=map_location)
