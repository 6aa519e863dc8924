"""Uploading a finished run to the Hugging Face hub."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

UPLOAD_IGNORE = ["_*", "checkpoint-*"]  # Trainer's temporary files and the checkpoints: the finished run only


def push_finished_run(output_dir: Path, trainer, recipe_name: str):
    """Upload the finished folder (weights, card, report, plots, metrics, recipe.json) to the run's hub repository in
    one commit, after everything is written. The token comes from the environment (HF_TOKEN, or `hf auth login`):
    it is never written to a file."""
    from transformers.utils.hub import hf_api

    if trainer.hub_model_id is None:  # Trainer makes the repository when it starts, unless told not to push
        trainer.init_hf_repo()
    info = hf_api().upload_folder(repo_id=trainer.hub_model_id, folder_path=str(output_dir),
                                  commit_message=f"hf-recipes {recipe_name}: finished run (model, card, report, "
                                                 "metrics)", revision=trainer.args.hub_revision,
                                  ignore_patterns=UPLOAD_IGNORE)
    logger.info("Pushed %s to the hub repository %s", output_dir, trainer.hub_model_id)
    return info
