"""The GP-UNIT networks; one file per network."""
from gpunit.models.content_encoder import ContentEncoder
from gpunit.models.discriminator import Discriminator
from gpunit.models.generator import Generator, StyleEncoder
from gpunit.models.prior_autoencoder import PriorAutoEncoder
from gpunit.models.sampler import StyleSampler

__all__ = ["ContentEncoder", "Discriminator", "Generator", "StyleEncoder", "PriorAutoEncoder", "StyleSampler"]
