"""Evaluation metrics (paper Sec. 5.1), one module each, imported where used so that training does
not need the evaluation packages (pytorch-fid, lpips):

- :mod:`~gpunit.metrics.fid`: FID on Inception features, DeepI2I's per-class mFID/mKID;
- :mod:`~gpunit.metrics.kid`: KID;
- :mod:`~gpunit.metrics.lpips_diversity`: LPIPS diversity;
- :mod:`~gpunit.metrics.paper_protocol` (+ :mod:`~gpunit.metrics.paper_networks`): FID and LPIPS diversity
  exactly as the paper's Table 1 computed them (StarGAN v2's metric code);
- :mod:`~gpunit.metrics.class_accuracy`: DeepI2I's RC and FC with a ResNet-50 + linear classifier;
- :mod:`~gpunit.metrics.domain_classifier`: translation accuracy of a small CNN on the synthetic domains;
- :mod:`~gpunit.metrics.content`, :mod:`~gpunit.metrics.prior`: checks on the synthetic prior.
"""
