"""Run the anime recommender pipeline: `python main.py [hydra overrides]`.

Examples:
    python main.py                                         # every step, on the demo data
    python main.py main.steps=[download,preprocess] data.min_user_ratings=5
    python main.py main.steps=[similar_anime] recs.anime="Cowboy Bebop"
    python main.py -m main.steps=[train] model=seed,best  # a sweep; summary table at the end

`mlflow run .` calls `python main.py --steps STEPS --overrides "OVERRIDES"`: the overrides come as
one string and are split the way Hydra reads them (quotes and brackets keep their spaces).
A run composes its configuration once, with Hydra's compose API; a user error (a bad override or
value, bad data, a query that cannot be answered) prints `error: ...` and exits with status 2,
without a traceback. A sweep (`-m`) and Hydra's own flags (`--help`, `--cfg job`) go through
`@hydra.main`: a bad override is then Hydra's message, a failed job is marked in the summary.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from animerec.console import setup_logging
from animerec.errors import UserError
from animerec.launch import prepare_argv
from animerec.pipeline import Summary, compose_config, register_schema_defaults, run_pipeline, to_container

PROJECT_ROOT = Path(__file__).resolve().parent
register_schema_defaults()  # config.yaml composes on them (a sweep's launcher imports this module too)


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> dict:
    """A sweep's job (or Hydra's own flags: --help, --cfg, --info)."""
    setup_logging()
    hydra_cfg = HydraConfig.get()
    try:
        return run_pipeline(to_container(cfg), hydra_cfg.overrides.task, PROJECT_ROOT)
    except UserError as err:  # bad input or config: the message says what to do, no traceback
        print(f"\nerror: {err}", file=sys.stderr, flush=True)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweep goes on; its summary lists this job as failed
            return Summary({"error": str(err)})
        sys.exit(2)


def run_once(overrides: list[str]) -> int:
    """One pipeline run: the configuration composed once and checked once; a user error is one `error:` line."""
    setup_logging()
    try:
        run_pipeline(compose_config(overrides, PROJECT_ROOT), overrides, PROJECT_ROOT)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    argv = prepare_argv(sys.argv[1:])
    if any(arg.startswith("-") for arg in argv):  # -m, --help, --cfg job, ...: Hydra's business
        sys.argv[1:] = argv
        main()
    else:
        sys.exit(run_once(argv))
