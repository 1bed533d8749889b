"""Scale-free features of training: CDF features and the outer-step feature engine."""

from lhopt.features.cdf import EWMACDF, normal_cdf
from lhopt.features.engine import CDF_STATS, DEFAULT_CDF_SCALES, FeatureEngine

__all__ = ["CDF_STATS", "DEFAULT_CDF_SCALES", "EWMACDF", "FeatureEngine", "normal_cdf"]
