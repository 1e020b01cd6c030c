"""gpunit: unsupervised image-to-image translation with a generative prior (GP-UNIT, CVPR 2022)."""

__version__ = "0.1.0"


def load_translator(*args, **kwargs):
    """Load a translator from checkpoint files; see :func:`gpunit.translate.load_translator`."""
    from gpunit.translate import load_translator as _load

    return _load(*args, **kwargs)
