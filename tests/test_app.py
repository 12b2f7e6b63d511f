"""The web app (`make app`, webapp/app.py) driven in a real browser: Debian's headless Chromium through
Selenium, against the app served on 127.0.0.1 with the bundled model. A generated talking clip is uploaded, the
edit is waited for, and the video the page returns is checked: every frame, the source's audio, the judge's
line; a file that is no video gets its message on the page. `.ci/run` installs chromium and chromium-driver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from common.video import probe_video, read_audio, write_video

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed (.ci/run does)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on a free port of 127.0.0.1 (its own process, as `make app` starts it); its URL."""
    port, work = free_port(), tmp_path_factory.mktemp("app")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "webapp.app", "--port", str(port), "--work-dir", str(work)]
    cmd += ["--manipulator", str(REPO / "models/spfem-toy"), "--max-seconds", "20"]
    log = open(work / "app.log", "w")  # noqa: SIM115 (the app's output while it serves the module's tests)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.fail(f"the app did not start:\n{(work / 'app.log').read_text()}")
    yield url, work
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def upload(driver, url: str, video: Path) -> None:
    driver.get(url)
    wait = WebDriverWait(driver, 60)
    field = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#input-video input[type=file]")))
    field.send_keys(str(video))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#input-video video")))  # the upload finished


def test_edit_a_video_in_the_browser(app, browser, toy_mead_tiny, tmp_path):
    url, _ = app
    source = toy_mead_tiny / "W001/video/front/neutral/level_1/003.mp4"
    upload(browser, url, source)
    browser.find_element(By.CSS_SELECTOR, "#edit-button").click()
    edited = WebDriverWait(browser, 300).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#edited-video video[src]"))
    )
    got = tmp_path / "edited.mp4"
    with urllib.request.urlopen(edited.get_attribute("src"), timeout=60) as response:
        got.write_bytes(response.read())
    src, out = probe_video(source), probe_video(got)
    assert out.n_frames == src.n_frames and (out.width, out.height) == (src.width, src.height)
    np.testing.assert_array_equal(read_audio(got), read_audio(source))  # the source's audio, untouched
    judge = browser.find_element(By.CSS_SELECTOR, "#judge").text
    assert "P(happy)" in judge and "on the edit" in judge
    side = browser.find_element(By.CSS_SELECTOR, "#side-by-side video[src]").get_attribute("src")
    with urllib.request.urlopen(side, timeout=60) as response:
        (tmp_path / "side.mp4").write_bytes(response.read())
    assert probe_video(tmp_path / "side.mp4").width == 2 * src.width
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert (tmp_path / "page.png").stat().st_size > 10_000
    if os.environ.get("SPFEM_APP_SCREENSHOT"):  # the docs' picture of the page
        shutil.copyfile(tmp_path / "page.png", os.environ["SPFEM_APP_SCREENSHOT"])


def test_bad_uploads_get_a_message_on_the_page(app, browser, tmp_path):
    """Not a video, no face, too long (the app runs with --max-seconds 20): one clear line on the page each."""
    url, _ = app
    noise = np.random.default_rng(0).integers(0, 255, (30, 96, 96, 3), dtype=np.uint8)
    (tmp_path / "notes.mp4").write_bytes(b"not a video at all" * 100)
    write_video(tmp_path / "faceless.mp4", noise, 25)
    write_video(tmp_path / "long.mp4", np.repeat(noise[:1], 25 * 25, axis=0), 25)
    for name, message in (
        ("notes.mp4", "is not a video this tool can read"),
        ("faceless.mp4", "no face found"),
        ("long.mp4", "long.mp4 is 25 s long; this page edits videos up to 20 s"),
    ):
        browser.get(url)
        field = WebDriverWait(browser, 60).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "#input-video input[type=file]"))
        )
        field.send_keys(str(tmp_path / name))
        time.sleep(2)  # the upload
        browser.find_element(By.CSS_SELECTOR, "#edit-button").click()
        try:
            WebDriverWait(browser, 120).until(lambda d, m=message: m in d.page_source)
        except TimeoutException:
            pytest.fail(f"{name}: no {message!r} on the page: {browser.find_element(By.TAG_NAME, 'body').text}")


def test_a_sample_is_a_portrait_animated_into_a_talking_clip(tmp_path):
    """The page's samples: a built-in portrait made into a clip once (then reused) and edited like an upload.
    With a refiner run in the runs root the menu offers it first (the pipeline's default) and warp still means
    the warp (this refiner checkpoint is no network: loading it would fail the edit)."""
    from webapp.app import AppConfig, Jobs, edit, renderer_choices

    runs = tmp_path / "runs"
    (runs / "refiner" / "default" / "checkpoints").mkdir(parents=True)
    (runs / "refiner" / "default" / "checkpoints" / "step_000000001.pt").write_bytes(b"not a checkpoint")
    cfg = AppConfig(manipulator=str(REPO / "models/spfem-toy"), runs_root=str(runs))
    assert renderer_choices(cfg) == ["warp_refine", "warp"]
    assert renderer_choices(AppConfig(runs_root=str(tmp_path / "empty"))) == ["warp"]
    jobs = Jobs(tmp_path)
    side, video, judged, used = edit(cfg, jobs, None, "astronaut", "happy", 1.0, "warp", "")
    clip = tmp_path / "samples" / "astronaut.mp4"
    assert probe_video(video).n_frames == probe_video(clip).n_frames and "P(happy)" in judged
    assert probe_video(side).width == 2 * probe_video(clip).width and used.startswith("astronaut.mp4 → happy")
    made = clip.stat().st_mtime_ns
    for _ in range(2):  # two more jobs: the clip is reused, only the latest job folders are kept
        edit(cfg, jobs, None, "astronaut", "sad", 1.0, "warp", "0:neutral,1:sad")
    assert clip.stat().st_mtime_ns == made and sorted(p.name for p in tmp_path.glob("job_*")) == [
        "job_0002",
        "job_0003",
    ]
