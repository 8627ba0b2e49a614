"""`glassvit push RUN_DIR REPO_ID`: upload a saved model or training run to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import serialization
from ..card import is_generated
from ..errors import GlassViTError

REPORT_NAME = "eval.json"


def configure_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a model directory: save_pretrained output or a training run")
    p.add_argument("repo_id", help="the Hub repo, e.g. me/vit-net-b16-birds (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", help="branch to push to (created when missing; default: main)")
    p.add_argument("--commit-message", help="the commit message")
    p.add_argument("--overwrite-card", action="store_true",
                   help="replace a README.md on the Hub that was not written by glassvit")
    p.add_argument("--results", type=Path,
                   help=f"an evaluation report (JSON object of metrics) for the card; default: RUN_DIR/{REPORT_NAME} "
                        "when it exists")
    p.add_argument("--dataset", action="append", default=[], dest="datasets",
                   help="a Hub dataset the model was trained on (repeatable)")
    p.add_argument("--license", help="the weights' license (default: the pretrained backbone's, else apache-2.0)")
    p.epilog = ("Authentication: `hf auth login` or the HF_TOKEN environment variable (a token with write access). "
                "A README.md in RUN_DIR that you wrote is uploaded as the card; otherwise glassvit writes one.")


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GlassViTError(f"cannot read the evaluation report {path}: {e}") from None
    if not isinstance(report, dict):
        raise GlassViTError(f"the evaluation report {path} is not a JSON object of metrics")
    return report


def run_push(args: argparse.Namespace) -> int:
    from .. import zoo

    run_dir = Path(args.run_dir)
    model = zoo.load_dir(run_dir)
    report_path = args.results or run_dir / REPORT_NAME
    results = _read_report(report_path) if args.results or report_path.is_file() else None
    card_path = run_dir / serialization.CARD_NAME
    own_card = card_path.read_text() if card_path.is_file() else None
    info = model.push_to_hub(
        args.repo_id, private=args.private or None, revision=args.revision, commit_message=args.commit_message,
        card=own_card if own_card is not None and not is_generated(own_card) else None,
        overwrite_card=args.overwrite_card, results=results, datasets=args.datasets, license=args.license,
    )
    repo_id = info.repo_url.repo_id
    print(f"pushed {run_dir} to {repo_id} (commit {info.oid})")
    print(f'load it with zoo.load("hf-hub:{repo_id}") or pin this version with zoo.load("hf-hub:{repo_id}@{info.oid}")')
    return 0
