"""Sharing models through the Hugging Face Hub: push a model, load "hf-hub:org/repo[@revision]".

A glassvit repo holds the unit of exchange (config.json + model.safetensors + README.md, see glassvit.serialization),
so a Hub snapshot in the local cache is itself a model directory that `zoo.load_dir` reads.

Loading is safe by construction:
- only `config.json` and `model.safetensors` are ever downloaded and read (JSON and safetensors, never pickle);
  a repo that holds only pickle weights (pytorch_model.bin, .pth, .ckpt, ...) is refused with a message saying so;
- config.json is downloaded first and validated (glassvit section, format version, registered head, known timm
  backbone, overrides) before the weights are requested, so a config this release cannot build costs no download;
- the weights are fetched at the exact commit config.json came from, so a push in between cannot mix two versions.

Everything else is huggingface_hub's: the cache (HF_HUB_CACHE or `cache_dir`), revisions (branch, tag or commit),
`force_download`, offline use from the cache (HF_HUB_OFFLINE=1), the endpoint (HF_ENDPOINT), and tokens (`token`,
HF_TOKEN or `hf auth login`). Tokens are handed to the client and never written into a message, a log or a file.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import CommitInfo, HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import serialization
from .card import is_generated, model_card
from .errors import GlassViTError, unknown
from .models.classifier import GlassViT, ModelConfig

PREFIX = "hf-hub:"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl", ".pickle")


def parse_name(repo_and_rev: str, revision: str | None = None) -> tuple[str, str | None]:
    """"org/repo@rev" (or "hf-hub:org/repo@rev") -> ("org/repo", "rev"); `revision` may give the revision instead."""
    repo_id, _, pinned = repo_and_rev.removeprefix(PREFIX).partition("@")
    if pinned and revision and pinned != revision:
        raise GlassViTError(f"two revisions for {repo_id!r}: @{pinned} in the name and revision={revision!r}")
    if not repo_id:
        raise GlassViTError(f"no Hub repo in {repo_and_rev!r}; expected hf-hub:org/repo or hf-hub:org/repo@revision")
    return repo_id, pinned or revision


def load_from_hub(repo_and_rev: str, *, num_classes: int | None = None, revision: str | None = None,
                  cache_dir: str | Path | None = None, force_download: bool = False, token: str | bool | None = None,
                  **overrides: Any) -> GlassViT:
    """Load "org/repo[@revision]" from the Hub (or from the cache when offline) with identical outputs.

    Args:
        repo_and_rev: the repo id, optionally pinned with "@branch", "@tag" or "@commit".
        num_classes: a different number keeps the backbone and re-initialises the head (see zoo.load_dir).
        revision: the revision, when not given after "@".
        cache_dir: the Hugging Face cache to use (default: HF_HUB_CACHE).
        force_download: download again even when the files are cached.
        token: a Hub token for private or gated repos (default: HF_TOKEN or the stored login).
        **overrides: zoo overrides (see glassvit.zoo), checked against config.json before the weights download.
    """
    from .zoo import load_dir

    directory = download(repo_and_rev, revision=revision, cache_dir=cache_dir, force_download=force_download,
                         token=token, overrides=overrides)
    return load_dir(directory, num_classes=num_classes, **overrides)


def download(repo_and_rev: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
             force_download: bool = False, token: str | bool | None = None,
             overrides: dict[str, Any] | None = None) -> Path:
    """Fetch config.json, validate it, then fetch model.safetensors of the same commit; returns the snapshot
    directory in the cache that holds both (a directory `zoo.load` reads)."""
    repo_id, revision = parse_name(repo_and_rev, revision)
    where = PREFIX + repo_id + (f"@{revision}" if revision else "")
    if force_download and constants.HF_HUB_OFFLINE:
        raise GlassViTError(f"{where}: force_download needs the Hub, but HF_HUB_OFFLINE=1 is set")
    fetch = dict(cache_dir=cache_dir, force_download=force_download, token=token)
    config_path = Path(_fetch(repo_id, serialization.CONFIG_NAME, revision, where, **fetch))
    snapshot = config_path.parent  # the cache's snapshots/<commit>/ folder
    validate_config(_read_json(config_path, where), f"{where} config.json", overrides or {})
    _fetch(repo_id, serialization.WEIGHTS_NAME, snapshot.name, where, **fetch)
    return snapshot


def validate_config(raw: Any, where: str, overrides: dict[str, Any]) -> ModelConfig:
    """Refuse a config this release cannot build: not glassvit's, another format version, an unknown head or timm
    backbone, or overrides that do not fit. Runs before any weights are downloaded."""
    from .zoo import apply_overrides

    try:
        serialization.check_config(raw, where)
        config = apply_overrides(ModelConfig.from_dict(raw["glassvit"], where), overrides)
        if not timm.is_model(config.backbone):
            raise unknown("timm backbone", config.backbone, timm.list_models())
    except GlassViTError as e:
        message = str(e) if str(e).startswith(where) else f"{where}: {e}"
        raise GlassViTError(f"{message}; the weights were not downloaded") from None
    return config


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlassViTError(f"{where}: config.json is not valid JSON: {e}") from None


def _fetch(repo_id: str, filename: str, revision: str | None, where: str, *, cache_dir, force_download,
           token) -> str:
    """hf_hub_download with one clear GlassViTError per failure (never naming the token)."""
    from . import __version__

    try:
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                               force_download=force_download, token=token, library_name="glassvit",
                               library_version=__version__)
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise GlassViTError(
            f"{where}: {filename} is not in the Hugging Face cache and {reason}; load it once while online "
            f"(with the same cache_dir / HF_HUB_CACHE) to use it offline") from None
    except EntryNotFoundError:
        raise _missing_file(repo_id, filename, revision, where, token) from None
    except (HfHubHTTPError, HFValidationError) as e:
        raise http_error(e, where) from None
    except ValueError as e:
        raise GlassViTError(f"{where}: could not download {filename}: {str(e).splitlines()[0]}") from None


def _missing_file(repo_id: str, filename: str, revision: str | None, where: str, token) -> GlassViTError:
    """The error for a file the repo lacks: a pickle-only repo is named as such, anything else as not glassvit."""
    try:
        files = HfApi().list_repo_files(repo_id, revision=revision, token=token)
    except HfHubHTTPError:
        files = []
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles and serialization.WEIGHTS_NAME not in files:
        return GlassViTError(
            f"{where} holds only pickle weights ({', '.join(pickles)}), which glassvit refuses to read: unpickling "
            f"can run arbitrary code. A glassvit repo has config.json and {serialization.WEIGHTS_NAME}; convert the "
            f"weights to safetensors from a source you trust and push them again")
    listing = f" (it has: {', '.join(files)})" if files else ""
    return GlassViTError(f"{where} has no {filename}{listing}; it is not a glassvit model repo at this revision")


def http_error(e: Exception, where: str) -> GlassViTError:
    """One message per Hub failure; built from the status and the Hub's own message, never from the request."""
    if isinstance(e, HFValidationError):
        return GlassViTError(f"{where}: not a valid Hub repo id or revision ({str(e).splitlines()[0]})")
    if isinstance(e, GatedRepoError):
        return GlassViTError(f"{where} is gated: accept its conditions on the Hub, then pass a token (token=..., "
                             "HF_TOKEN or `hf auth login`)")
    if isinstance(e, RepositoryNotFoundError):
        return GlassViTError(f"{where}: no such Hub repo, or it is private and no valid token was given "
                             "(token=..., HF_TOKEN or `hf auth login`)")
    if isinstance(e, RevisionNotFoundError):
        return GlassViTError(f"{where}: no such revision (a branch, tag or commit id of the repo)")
    status = e.response.status_code if isinstance(e, HfHubHTTPError) and e.response is not None else None
    hint = {401: "the token was refused: log in again or pass a valid token",
            403: "the token may not write to this repo or namespace"}.get(status, "")
    server = getattr(e, "server_message", None) or ""
    return GlassViTError(f"{where}: the Hub answered HTTP {status}{f' ({server})' if server else ''}"
                         f"{f'; {hint}' if hint else ''}")


def push_to_hub(model: GlassViT, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None, card: str | None = None,
                overwrite_card: bool = False, results: dict[str, Any] | None = None,
                datasets: list[str] | None = None, license: str | None = None) -> CommitInfo:
    """Upload `model` as config.json + model.safetensors + README.md to the Hub repo `repo_id` in one commit.

    The repo is created when missing (private when `private`), and the branch `revision` too. A README.md on the
    Hub that a person wrote (see glassvit.card.is_generated) is kept unless `overwrite_card`; a card glassvit wrote
    is refreshed.

    Args:
        card: the card to upload; default: glassvit.card.model_card with `results`, `datasets` and `license`.
        results: an evaluation report ({metric: value}, may be nested) for the card.
    Returns:
        huggingface_hub's CommitInfo: `.oid` is the commit id to pin ("hf-hub:org/repo@<oid>"), `.commit_url`.
    """
    from . import __version__

    api = HfApi(token=token, library_name="glassvit", library_version=__version__)
    branch = revision or constants.DEFAULT_REVISION
    where = f"{PREFIX}{repo_id}@{branch}"
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if branch != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        existing = _remote_card(api, repo_id, branch)
        keep_card = existing is not None and not is_generated(existing) and not overwrite_card
        if keep_card:
            warnings.warn(f"{where}: kept the README.md on the Hub, which was not written by glassvit; pass "
                          "overwrite_card=True (glassvit push --overwrite-card) to replace it", stacklevel=3)
        with tempfile.TemporaryDirectory() as tmp:
            text = card or model_card(model, results=results, repo_id=repo_id, datasets=datasets, license=license)
            model.save_pretrained(tmp, card=text)
            files = [serialization.CONFIG_NAME, serialization.WEIGHTS_NAME] + ([] if keep_card else
                                                                               [serialization.CARD_NAME])
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=branch, allow_patterns=files,
                                     commit_message=commit_message or f"Upload {model.config.name} with glassvit")
    except (HfHubHTTPError, HFValidationError) as e:
        raise http_error(e, where) from None


def _remote_card(api: HfApi, repo_id: str, branch: str) -> str | None:
    """The README.md on the Hub at `branch`, None when there is none."""
    try:
        path = hf_hub_download(repo_id, serialization.CARD_NAME, revision=branch, token=api.token)
    except EntryNotFoundError:
        return None
    return Path(path).read_text(errors="replace")
