"""Sample quality: FID, sFID, Inception Score, precision and recall on the FID Inception network; a domain
classifier's Frechet distance, class accuracy and copy check for small images; learning-curve analysis."""

from __future__ import annotations

from .arms import ARMS, Arm, build_arm_criterion, register_arm, sampler_at_nfe
from .classifier import (
    ClassifierConfig,
    DomainClassifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from .domain import DomainReference, domain_metrics, nearest_distances
from .frechet import feature_statistics, frechet_distance
from .inception import (
    INCEPTION_SIZE,
    SPATIAL_CHANNELS,
    InceptionFeatures,
    PoolFeatures,
    find_inception_weights,
    load_inception,
    to_inception_input,
)
from .inception_metrics import (
    evaluate_samples,
    metrics_from_statistics,
    small_set_warnings,
    torchmetrics_fid,
    unavailable_metrics,
)
from .inception_score import InceptionScore, inception_score
from .learning_speed import (
    Curve,
    ReachTable,
    first_reach,
    mean_curve,
    mean_flops,
    reach_table,
    spread,
)
from .manifold import PrecisionRecall, fraction_inside, knn_radii, precision_recall
from .plot import plot_learning_curves
from .statistics import (
    InceptionStatistics,
    compute_statistics,
    extract_features,
    is_statistics_file,
    iter_image_batches,
    iter_image_folder,
    load_image_array,
    log_stage,
)
from .step_flops import step_flops

__all__ = [
    "ARMS",
    "INCEPTION_SIZE",
    "SPATIAL_CHANNELS",
    "Arm",
    "ClassifierConfig",
    "Curve",
    "DomainClassifier",
    "DomainReference",
    "InceptionFeatures",
    "InceptionScore",
    "InceptionStatistics",
    "PoolFeatures",
    "PrecisionRecall",
    "ReachTable",
    "build_arm_criterion",
    "compute_statistics",
    "domain_metrics",
    "evaluate_samples",
    "extract_features",
    "feature_statistics",
    "find_inception_weights",
    "first_reach",
    "fraction_inside",
    "frechet_distance",
    "inception_score",
    "is_statistics_file",
    "iter_image_batches",
    "iter_image_folder",
    "knn_radii",
    "load_classifier",
    "load_image_array",
    "load_inception",
    "log_stage",
    "mean_curve",
    "mean_flops",
    "metrics_from_statistics",
    "nearest_distances",
    "plot_learning_curves",
    "precision_recall",
    "reach_table",
    "register_arm",
    "sampler_at_nfe",
    "save_classifier",
    "small_set_warnings",
    "spread",
    "step_flops",
    "to_inception_input",
    "torchmetrics_fid",
    "train_classifier",
    "unavailable_metrics",
]
