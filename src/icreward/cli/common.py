"""What every subcommand shares: the model option's help, JSON-object arguments. Imports nothing heavy."""

from __future__ import annotations

import argparse
import json

from icreward.rules import DEFAULT_MODEL

MODEL_HELP = "model: default (the shipped model), a checkpoint folder, a hub id or metric:<name> (default: default)"


def add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)


def json_object(text: str) -> dict:
    """argparse type: a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
