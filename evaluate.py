"""Evaluate a checkpoint, or estimate the settings of your own recording (Hydra entry point).

    python evaluate.py ckpt_path=outputs/.../checkpoints/last.ckpt
    python evaluate.py mode=predict ckpt_path=... wet=song_compressed.wav dry=song.wav
"""

import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

import models.configs  # noqa: F401 - the processor config group, generated from dynfx.PROCESSORS
from models.checkpoint import user_message

from models.pipeline import evaluate, predict


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        if cfg.mode == "predict":
            predict(cfg)
        elif cfg.mode == "evaluate":
            evaluate(cfg)
        else:
            raise ValueError(f"mode must be 'evaluate' or 'predict', got {cfg.mode!r}")
    except (ValueError, FileNotFoundError, InstantiationException) as exc:  # user errors
        print(f"error: {user_message(exc)}", file=sys.stderr)  # one line, no traceback
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
