"""Clean, filter, scale, encode and split the ratings (the 'preprocess' step). `python run.py --help` lists the options."""

import sys
from pathlib import Path

from animerec.pipeline import step_main

if __name__ == "__main__":
    sys.exit(step_main("preprocess", config_dir=Path(__file__).resolve().parents[2]))
