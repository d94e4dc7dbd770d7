"""Training: data preparation, augmentation, losses, normalisation, the training loop, prediction."""

from .normalize import DEFAULT_NORMALIZATION, make_normalization_spec, normalize
from .data import IGNORE, TrainingData, load_training_pairs, make_target, prepare_training_data, split_train_val
from .trainer import TrainConfig, TrainEvent, TrainResult, train
from .predict import predict_image, predict_patch_batch

__all__ = [
    "DEFAULT_NORMALIZATION", "make_normalization_spec", "normalize",
    "IGNORE", "TrainingData", "load_training_pairs", "make_target", "prepare_training_data", "split_train_val",
    "TrainConfig", "TrainEvent", "TrainResult", "train",
    "predict_image", "predict_patch_batch",
]
