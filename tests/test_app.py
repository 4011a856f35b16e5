"""app.py in a real browser: headless Chromium (Debian's chromium and chromium-driver, through
Selenium; never a browser download) uploads videos to the page and reads what it shows."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import app
import predict
from inference.web import Limits, check_upload
from tests.videos import action_change_video, untrained_checkpoint
from utils import UserError

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
INSTALL = "apt-get install chromium chromium-driver (Debian's packages; .ci/run installs them)"
OPTIONS = ["--flow-method", "farneback", "--workers", "1", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    fake = root / "notes.mp4"
    fake.write_text("this is a text file, renamed\n")
    return {"spatial": untrained_checkpoint(root / "spatial.pth", "spatial", seed=1),
            "motion": untrained_checkpoint(root / "motion.pth", "motion", seed=2),
            "video": action_change_video(root / "change.avi", 6.0), "fake": fake, "root": root}


@pytest.fixture(scope="module")
def server(files):
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
           "GRADIO_TEMP_DIR": str(files["root"] / "uploads")}
    proc = subprocess.Popen([sys.executable, "app.py", "--spatial", str(files["spatial"]), "--motion",
                             str(files["motion"]), "--port", str(port), *OPTIONS], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("app.py did not start serving within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip(f"no chromium/chromedriver on this machine: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def recognise(browser, url: str, video: Path) -> str:
    """Load the page, upload ``video``, press Recognise; the status line when it is done."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(video))
    WebDriverWait(browser, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#video .uploading"))
    time.sleep(1)  # the upload's round trip before the click reads it
    browser.find_element(By.ID, "recognise").click()
    WebDriverWait(browser, 180).until(lambda d: d.find_element(By.ID, "status").text.strip())
    return browser.find_element(By.ID, "status").text


def top5_on_page(browser) -> list[tuple[str, float]]:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#top5-table table tbody tr")
    return [(cells[0].text, float(cells[1].text))
            for cells in (row.find_elements(By.TAG_NAME, "td") for row in rows)]


@pytest.mark.slow  # a server and a browser
def test_the_page_shows_predict_py_s_top5_for_an_upload(files, browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    status = recognise(browser, server, files["video"])
    assert "60 frames" in status, status
    shown = top5_on_page(browser)
    out = tmp_path / "pred.json"
    assert predict.main(predict.get_args_parser().parse_args(
        [str(files["video"]), "--spatial", str(files["spatial"]), "--motion", str(files["motion"]), *OPTIONS,
         "--json", str(out)])) == 0
    expected = [(e["class"], e["probability"]) for e in json.loads(out.read_text())[0]["topk"]]
    assert shown == expected and len(shown) == 3
    bars = browser.find_element(By.ID, "top5").text
    assert all(name in bars for name, _ in expected)  # the bars' labels
    assert browser.find_elements(By.CSS_SELECTOR, "#annotated video")  # the annotated video to play
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline img")  # 6 s > --window 2: a timeline


@pytest.mark.slow  # a server and a browser
def test_a_text_file_renamed_mp4_gets_a_message_and_the_server_goes_on(files, browser, server):
    status = recognise(browser, server, files["fake"])
    assert "not a video this page can decode" in status
    assert "60 frames" in recognise(browser, server, files["video"])  # still serving
    assert top5_on_page(browser)


@pytest.mark.slow  # a server and a browser
def test_the_server_refuses_paths_outside_its_upload_folder(files, server):
    secret = files["root"] / "secret.txt"
    secret.write_text("not for the web\n")
    for path in (secret, Path("/etc/passwd"), files["spatial"]):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server}gradio_api/file={path}", timeout=10)
        assert err.value.code in (403, 404)
    uploads = files["root"] / "uploads"
    with pytest.raises(UserError, match="not an upload of this page"):
        check_upload(str(files["video"]), uploads, Limits(200, 600))
    with pytest.raises(UserError, match="not an upload of this page"):
        check_upload(str(uploads / ".." / "change.avi"), uploads, Limits(200, 600))


def test_limits_are_messages(files, tmp_path):
    shutil.copy(files["video"], tmp_path / "v.avi")
    with pytest.raises(UserError, match="more than this page takes \\(0.001 MB\\)"):
        check_upload(str(tmp_path / "v.avi"), tmp_path, Limits(0.001, 600))
    with pytest.raises(UserError, match="lasts 6 s, more than this page takes \\(2 s\\)"):
        check_upload(str(tmp_path / "v.avi"), tmp_path, Limits(200, 2))


def test_it_listens_on_localhost_and_shares_nothing_unless_told():
    args = app.get_args_parser().parse_args(["--spatial", "s.pth"])
    assert args.host == "127.0.0.1" and args.share is False
