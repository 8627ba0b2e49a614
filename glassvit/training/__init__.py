"""Fine-tuning on your data: datasets with annotations, the fit loop, checkpoints, distributed training.

    from glassvit import zoo
    from glassvit.training import fit
    result = fit(model, train_data, epochs=10, out_dir="runs/birds")   # -> FitResult
"""

from .loop import FitResult, TrainingInterrupted, evaluate, fit

__all__ = ["FitResult", "TrainingInterrupted", "evaluate", "fit"]
