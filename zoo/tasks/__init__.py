"""LightningModules and the pieces `train.py` wires together."""

from .callbacks import TrainingFigures
from .checkpoint_io import AtomicCheckpointIO
from .classification import ClassificationTask
from .common import TimmTask, create_model_by_name
from .distillation import DistillationTask as DistillationTask  # re-export
from .restoration import RestorationTask
from .segmentation import SegmentationTask

__all__ = [
    "AtomicCheckpointIO",
    "ClassificationTask",
    "RestorationTask",
    "SegmentationTask",
    "TimmTask",
    "TrainingFigures",
    "create_model_by_name",
]
