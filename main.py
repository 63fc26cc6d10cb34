"""Run the anime recommender pipeline: `python main.py [hydra overrides]`.

Examples:
    python main.py                                         # every step, on the demo data
    python main.py main.steps=[download,preprocess] data.min_user_ratings=5
    python main.py -m main.steps=[train] model=seed,best  # a sweep; summary table at the end
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from animerec.errors import UserError
from animerec.pipeline import run_pipeline, setup_logging, to_container

PROJECT_ROOT = Path(__file__).resolve().parent


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> dict:
    setup_logging()
    try:
        return run_pipeline(to_container(cfg), HydraConfig.get().overrides.task, PROJECT_ROOT)
    except UserError as err:  # bad input or config: the message says what to do, no traceback
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
