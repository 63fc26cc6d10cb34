"""Anime with the highest predicted rating for a user (the 'rating_recs' step). `python run.py --help` lists the options."""

import sys
from pathlib import Path

from animerec.pipeline import step_main

if __name__ == "__main__":
    sys.exit(step_main("rating_recs", config_dir=Path(__file__).resolve().parents[2]))
