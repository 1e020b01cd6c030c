"""GP-UNIT's prior data from BigGAN (paper Sec. 3.1, Appendix A.1): image pairs rendered from shared latents
(``biggan_pairs.py``), their quality filter (``pair_filter.py``) and instance masks (``masks.py``)."""
