"""Training checkpoints that lose nothing, without pickle.

A checkpoint lives in RUN_DIR/checkpoint/ and is one consistent set of files sharing a tag:

    weights-TAG.safetensors      the model's current (last) weights
    optimizer-TAG.safetensors    the optimizer's per-parameter tensors (AdamW moments and step counts)
    rank-TAG-R.safetensors       per process R: torch (CPU and CUDA), NumPy and Python RNG states, and in its
                                 metadata (JSON) the scalars of those states and the process's partial-epoch metrics
    state.json                   the commit point, written last and atomically: the tag, epoch and step counters,
                                 history, best metric, the fit settings, the optimizer's param groups and scalar
                                 state, the scheduler's and the gradient scaler's state

Every file is written atomically (temporary file + rename) and state.json names the tag it belongs to, so a run
killed at any moment leaves the previous checkpoint intact; files of older tags are removed after the commit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from .. import serialization
from ..errors import GlassViTError

STATE_NAME = "state.json"


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoint"


def exists(out_dir: Path) -> bool:
    return (checkpoint_dir(out_dir) / STATE_NAME).is_file()


def optimizer_split(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """optimizer.state_dict() -> (tensors keyed "INDEX.NAME", JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def optimizer_join(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_split`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entry in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_capture(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training step reads: (tensors, JSON scalars)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    tensors = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "python_state": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    scalars = {"numpy": [np_state[0], *(float(v) if isinstance(v, float) else int(v) for v in np_state[2:])],
               "python": [py_state[0], py_state[2]]}
    return tensors, scalars


def rng_restore(tensors: dict[str, torch.Tensor], scalars: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    kind, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss_next = scalars["python"]
    random.setstate((version, tuple(int(v) for v in tensors["python_state"].tolist()), gauss_next))


def save_rank(out_dir: Path, tag: str, rank: int, device: torch.device, extra: dict[str, Any]) -> None:
    """This process's RNG states and `extra` (JSON) under `tag`; every process calls it before `commit`."""
    tensors, scalars = rng_capture(device)
    path = checkpoint_dir(out_dir) / f"rank-{tag}-{rank}.safetensors"
    serialization.write_weights(path, tensors, {"rng": json.dumps(scalars), "extra": json.dumps(extra)})


def load_rank(out_dir: Path, tag: str, rank: int, device: torch.device) -> dict[str, Any]:
    """Restore this process's RNG states saved under `tag`; returns its `extra`."""
    path = checkpoint_dir(out_dir) / f"rank-{tag}-{rank}.safetensors"
    if not path.is_file():
        raise GlassViTError(f"{path} is missing: resume with the same number of processes as the interrupted run")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    rng_restore(load_file(str(path)), json.loads(meta["rng"]), device)
    return json.loads(meta["extra"])


def commit(out_dir: Path, tag: str, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
           state: dict[str, Any]) -> None:
    """Write weights and optimizer tensors under `tag`, then state.json (the commit), then drop older tags."""
    directory = checkpoint_dir(out_dir)
    serialization.write_weights(directory / f"weights-{tag}.safetensors", model_state, {"format": "pt"})
    tensors, rest = optimizer_split(optimizer_state)
    serialization.write_weights(directory / f"optimizer-{tag}.safetensors", tensors)
    serialization.write_json(directory / STATE_NAME, {**state, "tag": tag, "optimizer": rest})
    for path in directory.glob("*.safetensors"):
        if path.name.split("-")[1].split(".")[0] != tag:
            path.unlink(missing_ok=True)


def load(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(state, model weights, optimizer state dict) of the committed checkpoint in `out_dir`."""
    directory = checkpoint_dir(out_dir)
    path = directory / STATE_NAME
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GlassViTError(f"cannot read the checkpoint {path}: {e}") from e
    tag = state["tag"]
    weights = serialization.read_weights(directory / f"weights-{tag}.safetensors")
    optimizer = optimizer_join(serialization.read_weights(directory / f"optimizer-{tag}.safetensors"),
                               state["optimizer"])
    return state, weights, optimizer
