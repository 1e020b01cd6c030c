"""BigGAN (Brock et al., ICLR 2019) as BigGAN-PyTorch and the published DeepI2I code build it: the networks,
their weights (the 128 px release, our ``biggan.pt``) and a class-conditional trainer. DeepI2I builds on it.
Docs: ``docs/biggan.md``.
"""
