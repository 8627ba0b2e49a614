"""`glassvit report`: train every head family on DigitScenes with one budget and tabulate accuracy and
explanation quality (see glassvit.evaluation.report)."""

from __future__ import annotations

import argparse

from ..evaluation import report


def configure_report(p: argparse.ArgumentParser) -> None:
    report.configure(p)


def run_report(args: argparse.Namespace) -> int:
    return report.run(args)
