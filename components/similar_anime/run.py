"""Anime most similar to a query anime (the 'similar_anime' step). `python run.py --help` lists the options."""

import sys
from pathlib import Path

from animerec.pipeline import step_main

if __name__ == "__main__":
    sys.exit(step_main("similar_anime", config_dir=Path(__file__).resolve().parents[2]))
