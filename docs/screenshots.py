"""Take the README's screenshots of `animerec web` in headless Chromium (Debian's chromium + chromium-driver).

    python docs/screenshots.py artifacts/model/v3      # a model trained on the real dev set, see the README

Pages: similar anime for Cowboy Bebop; recommendations for a real MyAnimeList user's list (the first user
of tests/fixtures/rating_complete_sample.csv, never in the dev set), uploaded as a MAL export, and the same
list by username (an AniList stand-in on 127.0.0.1 answers for "sample_fan": no network is needed); the
model card.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def anilist_stand_in(person: pd.DataFrame) -> str:
    """A stand-in for AniList's GraphQL API on 127.0.0.1 that answers with ``person``'s list; returns its URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    entries = [{"status": "COMPLETED", "score": float(r), "media": {"idMal": int(a)}}
               for a, r in zip(person.anime_id, person.rating)]
    body = json.dumps({"data": {"MediaListCollection": {"lists": [{"isCustomList": False, "entries": entries}],
                                                        "hasNextChunk": False}}}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def main(model: Path) -> None:
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from animerec.service import RecommendationService
    from animerec.web import create_app

    service = RecommendationService.from_path(model)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service, model, str(model)), host="127.0.0.1", port=port,
                                          log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    person = pd.read_csv(ROOT / "tests" / "fixtures" / "rating_complete_sample.csv")
    person = person[person.user_id == person.user_id.iloc[0]]
    os.environ["ANIMEREC_ANILIST_API_URL"] = anilist_stand_in(person)
    rows = "".join(f"<anime><series_animedb_id>{a}</series_animedb_id><my_score>{r}</my_score>"
                   f"<my_status>Completed</my_status></anime>" for a, r in zip(person.anime_id, person.rating))
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    wait = WebDriverWait(driver, 30)
    base = f"http://127.0.0.1:{port}"
    try:
        driver.get(f"{base}/similar-anime?title=Cowboy+Bebop&n=10")
        wait.until(lambda d: d.find_elements(By.ID, "results"))
        driver.save_screenshot(str(ROOT / "docs" / "web_similar_anime.png"))
        with tempfile.TemporaryDirectory() as tmp:
            export = Path(tmp) / "animelist.xml.gz"
            export.write_bytes(gzip.compress(f"<myanimelist><myinfo/>{rows}</myanimelist>".encode()))
            driver.get(f"{base}/?tab=recommend")
            driver.find_element(By.ID, "ratings-file").send_keys(str(export))
            driver.find_element(By.ID, "recommend-go").click()
            wait.until(lambda d: d.find_elements(By.ID, "results"))
            driver.save_screenshot(str(ROOT / "docs" / "web_recommend_export.png"))
        driver.get(f"{base}/?tab=recommend")
        driver.find_element(By.ID, "username").send_keys("sample_fan")
        driver.find_element(By.CSS_SELECTOR, "#site option[value=anilist]").click()
        driver.find_element(By.ID, "recommend-go").click()
        wait.until(lambda d: d.find_elements(By.ID, "results"))
        driver.save_screenshot(str(ROOT / "docs" / "web_recommend_username.png"))
        driver.get(f"{base}/model")
        wait.until(lambda d: d.find_elements(By.ID, "metrics"))
        driver.save_screenshot(str(ROOT / "docs" / "web_model_card.png"))
    finally:
        driver.quit()
        server.should_exit = True
    print("wrote docs/web_similar_anime.png, docs/web_recommend_export.png, docs/web_recommend_username.png, "
          "docs/web_model_card.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
