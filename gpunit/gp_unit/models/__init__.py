"""The GP-UNIT networks; one file per network."""
from gpunit.gp_unit.models.content_encoder import ContentEncoder
from gpunit.gp_unit.models.discriminator import Discriminator
from gpunit.gp_unit.models.generator import Generator, StyleEncoder
from gpunit.gp_unit.models.prior_autoencoder import PriorAutoEncoder
from gpunit.gp_unit.models.sampler import StyleSampler

__all__ = ["ContentEncoder", "Discriminator", "Generator", "StyleEncoder", "PriorAutoEncoder", "StyleSampler"]
