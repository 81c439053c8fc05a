"""Training on shards: ``train(TrainConfig(...))`` or ``vqtok train CONFIG.toml``.

from vqtok.pipelines.training import TrainConfig, train
config = TrainConfig(model="image-vq-f8", train=["shards/train"], val=["shards/val"], out="runs/f8")
summary = train(config)          # OUT/final and OUT/best load with vqtok.load
summary = train(config, resume=True)   # continue from OUT/checkpoints
"""

from vqtok.pipelines.training.config import TrainConfig
from vqtok.pipelines.training.loop import (
    TrainingDiverged,
    TrainingInterrupted,
    TrainSummary,
    train,
)

__all__ = ["TrainConfig", "TrainSummary", "TrainingDiverged", "TrainingInterrupted", "train"]
