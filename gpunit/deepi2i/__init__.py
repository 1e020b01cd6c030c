"""DeepI2I (Wang et al., NeurIPS 2020): many-class image-to-image translation transferred from a pretrained BigGAN.

``config.py``, ``models.py`` (encoder = BigGAN discriminator trunk, adaptors, the translation network),
``trainer.py`` (two phases), ``weights.py`` (the published folder, a model from a BigGAN, our file),
``translator.py``, ``evaluate.py`` (mFID/mKID, RC/FC), ``demo.py``, ``benchmark.py`` (transfer vs scratch).
It builds on :mod:`gpunit.biggan`'s networks. Docs: ``docs/deepi2i.md``.
"""
