"""GP-UNIT (Yang, Jiang, Liu & Loy, CVPR 2022): unsupervised image-to-image translation with a generative prior.

``config.py`` (Stage I and II settings), ``models/`` (content encoder, prior auto-encoder, generator with
dynamic skips, discriminator, style sampler, IR-SE50), ``stage1.py`` (prior distillation), ``stage2.py``
(adversarial translation), ``sampler_fit.py``, ``weights.py`` (our files and the published ones),
``translator.py``, ``evaluate.py`` and ``evaluate_paper.py`` (Table 1's protocol), ``demo.py``,
``benchmark.py``, ``prior/`` (BigGAN image pairs, their filter, instance masks). Docs: ``docs/gp_unit.md``.
"""
