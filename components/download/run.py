"""Get the raw MyAnimeList files and store them as artifacts (the 'download' step). `python run.py --help` lists the options."""

import sys
from pathlib import Path

from animerec.pipeline import step_main

if __name__ == "__main__":
    sys.exit(step_main("download", config_dir=Path(__file__).resolve().parents[2]))
