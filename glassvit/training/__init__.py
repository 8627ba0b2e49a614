"""Fine-tuning on your data: datasets with annotations, the fit loop, checkpoints, distributed training.

    from glassvit import zoo
    from glassvit.training import ImageFolder, fit
    model = zoo.load("vit-s16", pretrained=True, num_classes=10)
    data = ImageFolder("birds/train", data_config=model.data_config)
    result = fit(model, data, epochs=10, out_dir="runs/birds")   # -> FitResult; runs/birds is a zoo.load directory
"""

from .datasets import ImageDataset, ImageFolder, ImageTransforms, Manifest, open_data
from .loop import FitResult, Trainer, TrainingInterrupted, evaluate, fit

__all__ = ["FitResult", "ImageDataset", "ImageFolder", "ImageTransforms", "Manifest", "Trainer",
           "TrainingInterrupted", "evaluate", "fit", "open_data"]
