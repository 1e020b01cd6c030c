"""gpunit: unsupervised image-to-image translation with generative priors (GP-UNIT, CVPR 2022; DeepI2I,
NeurIPS 2020). Layout: ``engine/`` (the training loop and its plumbing), ``data/``, ``metrics/``,
``nn.py``, ``losses.py`` (shared), one folder per method (``gp_unit/``, ``deepi2i/``, ``biggan/``), and
``translators.py`` (:func:`load_translator` for every method's files)."""

__version__ = "0.2.0"


def load_translator(*args, **kwargs):
    """Load a translator of any method from its files; see :func:`gpunit.translators.load_translator`."""
    # lazy: imported on call, as the package itself must not import the methods (they import the package)
    from gpunit.translators import load_translator as load

    return load(*args, **kwargs)
