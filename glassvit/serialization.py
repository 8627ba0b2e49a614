"""The unit of exchange: a directory with config.json + model.safetensors (+ README.md model card).

Only JSON and safetensors are ever read: no pickle. Files are written atomically (temporary file, then rename), so a
killed save never leaves a half-written file under the final name. Reading validates everything before a single
weight is copied: unknown format versions, malformed JSON, truncated or foreign safetensors, and missing, unexpected
or misshapen tensors each fail with one message.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import GlassViTError

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` then rename tmp_path to `path` (same directory, so the rename is atomic). The file gets
    the permissions a plain open() would give it (mkstemp's are owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    atomic_write(Path(path), lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def write_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=metadata))


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of a glassvit directory, checked for its format version."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise GlassViTError(f"{directory} is not a glassvit model directory: {CONFIG_NAME} is missing")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlassViTError(f"{path} is not valid JSON: {e}") from e
    check_config(config, str(path))
    return config


def check_config(config: Any, where: str) -> None:
    """Refuse configs of another library or of a format version this release does not know."""
    if not isinstance(config, dict) or "glassvit" not in config:
        raise GlassViTError(f"{where} is not a glassvit config (no 'glassvit' section)")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise GlassViTError(
            f"{where} has format_version {version!r}; this glassvit reads format_version {FORMAT_VERSION}"
            + (" (upgrade glassvit)" if isinstance(version, int) and version > FORMAT_VERSION else "")
        )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a missing, truncated or corrupt file fails with its path."""
    path = Path(path)
    if not path.is_file():
        raise GlassViTError(f"weights file {path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise GlassViTError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `module` only if keys and shapes match exactly; otherwise copy nothing and fail."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            problems.append(f"{len(items)} {label} ({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})")
    if problems:
        raise GlassViTError(f"weights in {source} do not match the model: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
