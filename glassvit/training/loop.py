"""The fit loop: `fit(model, train_data, val_data)` fine-tunes any zoo model through its own `model.loss`.

    for each epoch:   (backbone frozen while epoch < freeze_backbone_epochs)
        for each micro-batch:   output = model.forward_detailed(images); terms = model.loss(output, batch)
            backward(terms["loss"] / accumulation group size)
            every `accumulate` micro-batches: lr <- schedule(step); clip; AdamW step;
                                              head.after_optimizer_step(output, batch)
        validate (accuracy, concept accuracy, every loss term); keep the best weights by `select_metric`
        checkpoint (RUN_DIR/checkpoint, see glassvit.training.checkpoint) and append to RUN_DIR/metrics.jsonl
    restore the best weights; head.after_training(model, loader); save RUN_DIR as a zoo.load directory

The trainer knows nothing of the head beyond `model.loss`, `after_optimizer_step` and `after_training`.
Randomness comes from `seed` alone: the epoch's order from (seed, epoch), augmentation and dropout from the global
RNGs seeded once and saved in every checkpoint, so a run interrupted (SIGINT/SIGTERM: the current optimiser step is
finished, a checkpoint written) and resumed ends with the same weights as an uninterrupted one on CPU. With
num_workers > 0, resuming inside an epoch redraws that epoch's remaining augmentations (workers are reseeded).
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from .. import serialization
from ..errors import GlassViTError
from ..heads.base import Head
from ..types import HeadOutput
from . import checkpoint, distributed
from .checks import check_batch, check_data
from .loaders import EpochSampler, collate, eval_view, make_loader, split_validation, to_device
from .metrics import MetricTotals
from .optim import backbone_parameters, build_optimizer, build_scheduler

# fit arguments that shape the trajectory; a resumed run must use the same values
TRAJECTORY = ("epochs", "batch_size", "lr", "backbone_lr", "weight_decay", "warmup_epochs", "min_lr", "grad_clip",
              "accumulate", "freeze_backbone_epochs", "amp", "seed", "val_fraction", "select_metric", "world")
METRICS_NAME = "metrics.jsonl"


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by `fit` after SIGINT/SIGTERM, once the current step is finished and the checkpoint written."""


@dataclass
class FitResult:
    """What `fit` returns.

    model: the trained model (best weights by `select_metric` when there was validation data, else the last
    ones; after the head's `after_training`), in eval mode. history: one dict per epoch (the lines of
    metrics.jsonl). best_metric/best_epoch: the selected validation value and its 1-based epoch (None without
    validation). out_dir: the run directory (a zoo.load directory), when one was given.
    """

    model: nn.Module
    history: list[dict[str, float]]
    select_metric: str
    best_metric: float | None
    best_epoch: int | None
    out_dir: Path | None = None
    seconds: float = 0.0

    @property
    def weights(self) -> str:
        return "best" if self.best_epoch is not None else "last"

    def summary(self) -> str:
        last = self.history[-1] if self.history else {}
        lines = [f"trained {len(self.history)} epochs in {self.seconds:.1f} s"]
        if self.best_epoch is not None:
            lines.append(f"best val_{self.select_metric} {self.best_metric:.4f} at epoch {self.best_epoch} "
                         "(kept these weights)")
        shown = {k: v for k, v in last.items() if k.startswith(("train_", "val_"))}
        lines.append("last epoch: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()))
        if self.out_dir is not None:
            lines.append(f"run directory {self.out_dir} (load it with glassvit.zoo.load)")
        return "\n".join(lines)


@dataclass
class _RunState:
    epoch: int = 0                  # epochs completed
    batches_done: int = 0           # micro-batches of the current epoch done (resuming inside an epoch)
    global_step: int = 0            # optimiser steps done
    saves: int = 0                  # checkpoints written (the tag of the next one)
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    finished: bool = False


def fit(model: nn.Module, train_data: Dataset, val_data: Dataset | None = None, *, epochs: int = 10,
        batch_size: int = 32, lr: float = 1e-3, backbone_lr: float | None = None, weight_decay: float = 0.05,
        warmup_epochs: float = 0, min_lr: float = 0.0, grad_clip: float | None = None, accumulate: int = 1,
        freeze_backbone_epochs: int = 0, amp: bool = False, seed: int = 0, out_dir: str | Path | None = None,
        resume: bool = False, select_metric: str = "accuracy", val_fraction: float = 0.1, num_workers: int = 0,
        progress: bool = True, device: str | torch.device | None = None) -> FitResult:
    """Fine-tune `model` (a GlassViT) on `train_data`; see the module docstring for the loop.

    Args:
        model: a GlassViT (zoo.load); trained in place and returned in the result.
        train_data: map-style dataset of dicts: "image" (3,H,W) float, "label" (long scalar, or (C,) float
            multi-hot for multi-label heads), optional "concepts" (K,), "spatial_concepts" (N,K) on the model's
            token grid, "mask"/"masks"/"box"/"boxes"; NaN marks a missing annotation. (image, label) pairs, as
            torchvision datasets yield them, are accepted too.
        val_data: validation data; when None, a seeded `val_fraction` of `train_data` is held out (0: none).
        epochs: passes over the training data.
        batch_size: images per optimiser step and micro-batch, over all processes (divided among them).
        lr: peak learning rate of the head; backbone_lr: of the backbone (default: `lr`).
        weight_decay: AdamW decoupled weight decay (not applied to biases, norms, position embeddings).
        warmup_epochs: linear warm-up from 0 (may be fractional), then cosine decay to `min_lr`, per step.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        accumulate: micro-batches per optimiser step (gradient accumulation).
        freeze_backbone_epochs: train only the head for this many first epochs.
        amp: mixed precision: bfloat16 autocast on CPU and on GPUs that support it, else float16 with loss scaling.
        seed: the one source of randomness (epoch order, augmentation, dropout, the validation split).
        out_dir: run directory: config.json + model.safetensors (a zoo.load directory), metrics.jsonl,
            checkpoint/ (written each epoch and on SIGINT/SIGTERM). None: nothing is written.
        resume: continue the run in `out_dir` from its checkpoint (a new run when it has none).
        select_metric: validation metric that picks the kept weights ("accuracy", "loss", "concept_accuracy", or
            any loss term); metrics with "loss" in the name are minimised, others maximised.
        val_fraction: share of `train_data` held out when `val_data` is None.
        num_workers: data-loading processes per training process.
        progress: a tqdm bar per epoch (loss, images/s) and an epoch/summary log, on rank 0.
        device: default cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu.

    Returns:
        FitResult (model, history, best metric and epoch, run directory).

    Under `torchrun`, every process calls `fit` with the same arguments; gradients are averaged with
    DistributedDataParallel and only rank 0 logs and writes.
    """
    settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr=lr if backbone_lr is None else backbone_lr,
                    weight_decay=weight_decay, warmup_epochs=warmup_epochs, min_lr=min_lr, grad_clip=grad_clip,
                    accumulate=accumulate, freeze_backbone_epochs=freeze_backbone_epochs, amp=amp, seed=seed,
                    val_fraction=val_fraction if val_data is None else None, select_metric=select_metric)
    ctx = distributed.setup(device)
    try:
        trainer = Trainer(model, train_data, val_data, settings, ctx, out_dir, num_workers, progress)
        return trainer.run(resume)
    finally:
        distributed.teardown(ctx)


def evaluate(model: nn.Module, data: Dataset, *, batch_size: int = 64, num_workers: int = 0,
             device: str | torch.device | None = None, amp: bool = False) -> dict[str, float]:
    """Metrics of `model` on `data` (accuracy, concept_accuracy where annotated, every loss term), in eval mode."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ctx = distributed.Context(0, 1, device, owns_group=False)
    model.to(device)
    return _evaluate(model, data, batch_size, num_workers, ctx, _amp_dtype(device, amp))


class _LossModule(nn.Module):
    """What DistributedDataParallel wraps: the forward pass and the head's loss in one call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], HeadOutput]:
        output = self.model.forward_detailed(batch["image"])
        return self.model.loss(output, batch), output


class Trainer:
    """The state of one fit run; `fit` builds it and calls `run`; `train_step` is its unit of work."""

    def __init__(self, model: nn.Module, train_data: Dataset, val_data: Dataset | None, settings: dict[str, Any],
                 ctx: distributed.Context, out_dir: str | Path | None, num_workers: int, progress: bool):
        s = self.settings = {**settings, "world": ctx.world}
        _check_settings(s)
        self.model, self.ctx, self.num_workers = model, ctx, num_workers
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress and ctx.is_main
        if val_data is None:
            train_data, val_data = split_validation(train_data, s["val_fraction"], s["seed"])
        check_data(model, train_data, "training")
        if val_data is not None:
            check_data(model, val_data, "validation")
        self.train_data, self.val_data = train_data, val_data
        self.local_batch = s["batch_size"] // ctx.world
        self.batches_per_epoch = math.ceil(len(self._sampler(0)) / self.local_batch)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / s["accumulate"])
        model.to(ctx.device)
        self.optimizer = build_optimizer(model, s["lr"], s["backbone_lr"], s["weight_decay"])
        self.scheduler = build_scheduler(self.optimizer, self.steps_per_epoch * s["epochs"],
                                         round(self.steps_per_epoch * s["warmup_epochs"]), s["min_lr"])
        self.amp_dtype = _amp_dtype(ctx.device, s["amp"])
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.state = _RunState()
        self.totals = MetricTotals(model.head.multi_label)
        self.net = _LossModule(model)
        self.ddp: nn.Module | None = None
        self._best_copy: dict[str, Tensor] | None = None
        self.frozen: bool | None = None
        self.trainable = {p: p.requires_grad for p in model.parameters()}  # parameters the caller froze stay frozen
        self.stop = False
        self.checked = False

    # ---------------------------------------------------------------- run
    def run(self, resume: bool) -> FitResult:
        start = time.perf_counter()
        self._begin(resume)
        try:
            with self._signals():
                while self.state.epoch < self.settings["epochs"] and not self.state.finished:
                    self._epoch(self.state.epoch)
            if not self.state.finished:
                self._finish()
        finally:
            for p, trainable in self.trainable.items():
                p.requires_grad_(trainable)
        model = self.model.eval()
        result = FitResult(model, list(self.state.history), self.settings["select_metric"], self.state.best_metric,
                           self.state.best_epoch, self.out_dir, time.perf_counter() - start)
        if self.progress:
            print(result.summary(), flush=True)
        return result

    def _begin(self, resume: bool) -> None:
        has_checkpoint = self.out_dir is not None and checkpoint.exists(self.out_dir)
        if has_checkpoint and not resume:
            raise GlassViTError(f"{self.out_dir} already holds a training run; resume it (resume=True, --resume) "
                                "or choose another run directory")
        if resume and self.out_dir is None:
            raise GlassViTError("resume=True needs the out_dir of the run to continue")
        if has_checkpoint:
            self._restore()
            return
        if resume and self.progress:
            print(f"no checkpoint in {self.out_dir}: starting a new run", flush=True)
        seed = self.settings["seed"] + self.ctx.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        if self.out_dir is not None and self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / METRICS_NAME).unlink(missing_ok=True)

    # ---------------------------------------------------------------- epochs
    def _epoch(self, epoch: int) -> None:
        s = self.settings
        self._set_frozen(epoch < s["freeze_backbone_epochs"])
        self.model.train()
        t0 = time.perf_counter()
        start = self.state.batches_done
        loader = make_loader(self.train_data, self._sampler(epoch, start * self.local_batch), self.local_batch,
                             self.num_workers, s["seed"], pin_memory=self.ctx.device.type == "cuda")
        bar = self._bar(epoch, start)
        seen, shown = 0, 0.0
        for batch in loader:
            batch = to_device(batch, self.ctx.device)
            if not self.checked:
                check_batch(self.model, batch)
                self.checked = True
            terms, _, stepped = self.train_step(batch)
            seen += batch["image"].shape[0]
            now = time.perf_counter()
            if bar is not None:
                bar.update(1)
            if now - shown > 1.0:  # reading the loss waits for the device: about once a second
                shown = now
                loss = self._checked_loss(terms)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{seen * self.ctx.world / (now - t0):.0f}")
            if stepped and self.ctx.any(self.stop):
                self._interrupt(bar)
        if bar is not None:
            bar.close()
        self._end_epoch(epoch, time.perf_counter() - t0)
        if self.ctx.any(self.stop):
            self._interrupt(None)

    def train_step(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], HeadOutput, bool]:
        """One micro-batch (on the device): forward, the head's loss, backward; when it closes an accumulation
        group, also the optimiser step and the head's after_optimizer_step. Returns (loss terms, output, stepped)."""
        accumulate = self.settings["accumulate"]
        micro = self.state.batches_done % self.batches_per_epoch
        group_start = micro - micro % accumulate
        group_size = min(accumulate, self.batches_per_epoch - group_start)
        stepped = micro + 1 == group_start + group_size
        net = self.ddp if self.ddp is not None else self.net
        with self.ddp.no_sync() if self.ddp is not None and not stepped else nullcontext():
            with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                terms, output = net(batch)
            self.scaler.scale(terms["loss"] / group_size).backward()
        self.totals.update(terms, output, batch)
        self.state.batches_done += 1
        if stepped:
            self._optimizer_step(output, batch)
        return terms, output, stepped

    def _checked_loss(self, terms: dict[str, Tensor]) -> float:
        loss = float(terms["loss"].detach())
        if not math.isfinite(loss):
            raise GlassViTError(f"the loss became {loss} at epoch {self.state.epoch + 1}, step "
                                f"{self.state.global_step}; lower the learning rate or set grad_clip")
        return loss

    def _optimizer_step(self, output: HeadOutput, batch: dict[str, Any]) -> None:
        s = self.settings
        self.scheduler.step_update(self.state.global_step)
        if s["grad_clip"] is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.global_step += 1
        head = self.model.head
        if type(head).after_optimizer_step is not Head.after_optimizer_step:
            with torch.no_grad():
                head.after_optimizer_step(output, batch)
            self.ctx.average_([t for t in _non_gradient_tensors(head)])

    def _end_epoch(self, epoch: int, seconds: float) -> None:
        s = self.settings
        merged = MetricTotals(self.model.head.multi_label)
        for part in self.ctx.gather(self.totals.state()):
            merged.merge_(part["sums"], part["counts"])
        record: dict[str, float] = {"epoch": epoch + 1, "step": self.state.global_step,
                                    "lr": self.optimizer.param_groups[-1]["lr"], "seconds": round(seconds, 3)}
        record.update({f"train_{k}": v for k, v in merged.result().items()})
        if not math.isfinite(record.get("train_loss", 0.0)):
            raise GlassViTError(f"the loss became {record['train_loss']} in epoch {epoch + 1}; lower the learning "
                                "rate or set grad_clip")
        improved = False
        if self.val_data is not None:
            val = _evaluate(self.model, self.val_data, self.local_batch, self.num_workers, self.ctx, self.amp_dtype)
            record.update({f"val_{k}": v for k, v in val.items()})
            key = s["select_metric"]
            if key not in val:
                raise GlassViTError(f"select_metric {key!r} is not measured on this data; measured: "
                                    f"{', '.join(sorted(val))}")
            better = min if "loss" in key else max
            if self.state.best_metric is None or better(val[key], self.state.best_metric) != self.state.best_metric:
                self.state.best_metric, self.state.best_epoch, improved = val[key], epoch + 1, True
                if self.out_dir is None:
                    self._best_copy = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.state.history.append(record)
        self.state.epoch, self.state.batches_done = epoch + 1, 0
        self.totals = MetricTotals(self.model.head.multi_label)
        if self.progress:
            print(_epoch_line(record, s["epochs"]), flush=True)
        if self.out_dir is not None:
            if self.ctx.is_main:
                with open(self.out_dir / METRICS_NAME, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if improved or self.val_data is None:
                    self.model.save_pretrained(self.out_dir)
            self._save()

    def _finish(self) -> None:
        """Best weights back in the model, the head's end-of-training step, the final run directory."""
        if self.state.best_epoch is not None:
            self._restore_best()
        head = self.model.head
        if type(head).after_training is not Head.after_training:
            loader = DataLoader(eval_view(self.train_data), batch_size=self.local_batch, shuffle=False,
                                num_workers=self.num_workers, collate_fn=collate)
            self.model.eval()
            head.after_training(self.model, loader)
        self.state.finished = True
        if self.out_dir is not None:
            if self.ctx.is_main:
                self.model.save_pretrained(self.out_dir)
            self._save()

    # ---------------------------------------------------------------- checkpoints
    def _save(self) -> None:
        tag = f"{self.state.saves:06d}"
        self.state.saves += 1
        checkpoint.save_rank(self.out_dir, tag, self.ctx.rank, self.ctx.device, {"totals": self.totals.state()})
        self.ctx.barrier()
        if self.ctx.is_main:
            state = {k: getattr(self.state, k) for k in _RunState.__dataclass_fields__}
            state.update(settings=self.settings, scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), frozen=self.frozen)
            checkpoint.commit(self.out_dir, tag, self.model.state_dict(), self.optimizer.state_dict(), state)
        self.ctx.barrier()

    def _restore(self) -> None:
        state, weights, optimizer_state = checkpoint.load(self.out_dir)
        saved = state["settings"]
        changed = [f"{k}: {saved.get(k)!r} -> {self.settings[k]!r}" for k in TRAJECTORY if saved.get(k) != self.settings[k]]
        if changed:
            raise GlassViTError(f"cannot resume {self.out_dir} with different settings ({'; '.join(changed)}); "
                                "use the settings of the interrupted run")
        serialization.load_state_strict(self.model, weights, str(checkpoint.checkpoint_dir(self.out_dir)))
        self.optimizer.load_state_dict(optimizer_state)
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.state = _RunState(**{k: state[k] for k in _RunState.__dataclass_fields__})
        extra = checkpoint.load_rank(self.out_dir, state["tag"], self.ctx.rank, self.ctx.device)
        self.totals = MetricTotals.from_state(extra["totals"], self.model.head.multi_label)
        if self.ctx.is_main:
            lines = "".join(json.dumps(r) + "\n" for r in self.state.history)
            serialization.atomic_write(self.out_dir / METRICS_NAME, lambda p: p.write_text(lines))
        if self.progress:
            where = f"epoch {self.state.epoch + 1}, batch {self.state.batches_done}"
            print(f"resuming {self.out_dir} at {where} (step {self.state.global_step})", flush=True)

    def _restore_best(self) -> None:
        if self.out_dir is None:
            self.model.load_state_dict(self._best_copy)
            return
        weights = serialization.read_weights(self.out_dir / serialization.WEIGHTS_NAME)
        serialization.load_state_strict(self.model, {k: v.to(self.ctx.device) for k, v in weights.items()},
                                        str(self.out_dir))

    def _interrupt(self, bar) -> None:
        if bar is not None:
            bar.close()
        where = f"epoch {self.state.epoch + 1}, step {self.state.global_step}"
        if self.out_dir is None:
            raise TrainingInterrupted(f"interrupted at {where}; nothing saved (no out_dir)")
        self._save()
        raise TrainingInterrupted(f"interrupted at {where}; checkpoint saved, resume with --resume "
                                  f"(resume=True) and the same out_dir {self.out_dir}")

    # ---------------------------------------------------------------- helpers
    def _sampler(self, epoch: int, start: int = 0) -> EpochSampler:
        return EpochSampler(len(self.train_data), shuffle=True, seed=self.settings["seed"], epoch=epoch,
                            rank=self.ctx.rank, world=self.ctx.world, pad=True, start=start)

    def _set_frozen(self, frozen: bool) -> None:
        if frozen == self.frozen:
            return
        for p in backbone_parameters(self.model):
            p.requires_grad_(self.trainable[p] and not frozen)
        self.frozen = frozen
        if self.ctx.active:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            # heads may leave parameters out of a forward pass (a branch without its annotations)
            self.ddp = DistributedDataParallel(self.net, device_ids=ids, find_unused_parameters=True)

    def _bar(self, epoch: int, start: int):
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:  # the per-epoch lines still report (tqdm comes with glassvit[data])
            return None

        return tqdm(total=self.batches_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{self.settings['epochs']}",
                    leave=False, dynamic_ncols=True)

    @contextmanager
    def _signals(self):
        """SIGINT/SIGTERM finish the current optimiser step, write a checkpoint and stop; a second SIGINT stops now."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.stop and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)


def _evaluate(model: nn.Module, data: Dataset, batch_size: int, num_workers: int, ctx: distributed.Context,
              amp_dtype: torch.dtype | None) -> dict[str, float]:
    was_training = model.training
    model.eval()
    totals = MetricTotals(model.head.multi_label)
    sampler = EpochSampler(len(data), shuffle=False, rank=ctx.rank, world=ctx.world, pad=False)
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, ctx.device)
            check_batch(model, batch)
            with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                output = model.forward_detailed(batch["image"])
                terms = model.loss(output, batch)
            totals.update(terms, output, batch)
    model.train(was_training)
    merged = MetricTotals(model.head.multi_label)
    for part in ctx.gather(totals.state()):
        merged.merge_(part["sums"], part["counts"])
    return merged.result()


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _non_gradient_tensors(head: nn.Module) -> list[Tensor]:
    """Head state not trained by gradients (buffers, frozen parameters): what after_optimizer_step may update."""
    return [*head.buffers(), *(p for p in head.parameters() if not p.requires_grad)]


def _check_settings(s: dict[str, Any]) -> None:
    if s["epochs"] < 1:
        raise GlassViTError(f"epochs must be >= 1, got {s['epochs']}")
    if s["accumulate"] < 1:
        raise GlassViTError(f"accumulate must be >= 1, got {s['accumulate']}")
    if s["batch_size"] < 1 or s["batch_size"] % s["world"]:
        raise GlassViTError(f"batch_size {s['batch_size']} must be a positive multiple of the number of processes "
                            f"({s['world']})")
    if not 0 <= s["warmup_epochs"] <= s["epochs"]:
        raise GlassViTError(f"warmup_epochs must lie in [0, epochs={s['epochs']}], got {s['warmup_epochs']}")
    if s["grad_clip"] is not None and s["grad_clip"] <= 0:
        raise GlassViTError(f"grad_clip must be positive, got {s['grad_clip']}")


def _epoch_line(record: dict[str, float], epochs: int) -> str:
    shown = [f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_"))]
    return f"epoch {int(record['epoch'])}/{epochs}: " + ", ".join(shown) + f" ({record['seconds']:.1f} s)"
