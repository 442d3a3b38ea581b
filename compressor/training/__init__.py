"""Fine-tuning, evaluation and BatchNorm re-estimation."""

from ..methods.base import TrainingHooks
from .bn import recalibrate_batchnorm
from .evaluate import EvalResult, evaluate
from .finetune import EpochLog, FinetuneResult, LoopOptions, TrainingDiverged, build_optimizer, finetune, lr_factor

__all__ = ["EpochLog", "EvalResult", "FinetuneResult", "LoopOptions", "TrainingDiverged", "TrainingHooks",
           "build_optimizer", "evaluate", "finetune", "lr_factor", "recalibrate_batchnorm"]
