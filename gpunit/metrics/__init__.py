"""Evaluation metrics (paper Sec. 5.1): FID and KID on Inception features, LPIPS diversity,
DeepI2I's per-class mFID/mKID, and domain-classifier translation accuracy (RC/FC)."""
from gpunit.metrics.domain_classifier import DomainClassifier, domain_accuracy, load_or_train_domain_classifier
from gpunit.metrics.fid import (InceptionFeatures, fid_from_features, frechet_distance, per_class_scores)
from gpunit.metrics.kid import kernel_inception_distance
from gpunit.metrics.lpips_diversity import LPIPSDiversity

__all__ = ["DomainClassifier", "InceptionFeatures", "LPIPSDiversity", "domain_accuracy", "fid_from_features",
           "frechet_distance", "kernel_inception_distance", "load_or_train_domain_classifier", "per_class_scores"]
