"""Train an estimator of a dynamics processor's settings (Hydra entry point).

    python train.py experiment=quickstart
    python train.py processor=limiter processor.knee_type=hard input_mode=wet
    python train.py -m processor=compressor,limiter processor.knee_type=hard,quadratic
"""

import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

import models.configs  # noqa: F401 - the processor config group, generated from dynfx.PROCESSORS
from models.checkpoint import user_message
from models.module import NonFiniteTrainingError
from models.pipeline import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        results = train(cfg)
    except NonFiniteTrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
    except (ValueError, FileNotFoundError, InstantiationException) as exc:  # user errors
        print(f"error: {user_message(exc)}", file=sys.stderr)  # one line, no traceback
        raise SystemExit(2) from None
    return results.get(cfg.get("optimized_metric") or "model/mrstft", float("nan"))


if __name__ == "__main__":
    main()
