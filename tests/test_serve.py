"""ca2st serve: the demo's model found (or the advice to run the demo), the page's answers (the top-k of
``ca2st.predict``, a timeline for a video longer than one clip, an error's text for a broken file, the B-CA maps
panel), and the page itself driven in headless Chromium (skipped where chromium, chromedriver or selenium are
missing)."""

import importlib.util
import os
import shutil
import socket
import sys

import pytest
import torch

import ca2st
from ca2st.cli import main
from ca2st.errors import CheckpointError, ConfigError
from ca2st.serve import NO_MAPS, VideoPage, find_demo, import_gradio, launch, load_page
from media import make_video

from helpers import randomize_, smoke_model

NAMES = ["red rises low", "red rises high", "red fades low", "red fades high", "blue", "green", "grey", "white"]
FPS = 25  # the smoke model reads 8 frames 4 apart: one clip spans 32 frames, 1.28 s


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_media")
    short = make_video(folder / "short.mp4", "mp4", 25, fps=FPS)  # 1 s: one clip
    long = make_video(folder / "long.mp4", "mp4", 100, fps=FPS)  # 4 s: a timeline of windows
    broken = folder / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return short, long, broken


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, media):
    """A folder as ``ca2st demo`` leaves it: models/ca2st/checkpoint-*, data/classes.txt, data/videos/val_*.mp4."""
    folder = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    (folder / "models" / "ca2st" / "checkpoint-00000001").mkdir(parents=True)  # an older one: not served
    ca2st.save_model(randomize_(smoke_model(num_classes=8)).eval(), folder / "models" / "ca2st" / "checkpoint-00000002")
    videos = folder / "data" / "videos"
    videos.mkdir(parents=True)
    (folder / "data" / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for name in ("val_0_000", "val_0_001", "val_3_000", "train_1_000"):
        shutil.copy(media[0], videos / f"{name}.mp4")
    return folder


@pytest.fixture(scope="module")
def page(demo_dir):
    return load_page(demo_dir=demo_dir, topk=3, device="cpu")


def expected_top(page, video, window=None):
    """``ca2st.predict``'s top-k of ``video`` as the page asks for it (windows of ``window`` s every half of it)."""
    stride = window / 2 if window else None
    labels = page.labels
    return ca2st.predict(page.model, video, labels=labels, topk=3, window=window, stride=stride, progress=False).top()


def test_find_demo_serves_the_last_checkpoint_with_the_class_names_and_one_example_per_class(demo_dir, tmp_path):
    demo = find_demo(demo_dir)
    assert demo.checkpoint.name == "checkpoint-00000002" and demo.labels == demo_dir / "data" / "classes.txt"
    assert [p.name for p in demo.examples] == ["val_0_000.mp4", "val_3_000.mp4"]
    with pytest.raises(CheckpointError, match="run `ca2st demo --out"):
        find_demo(tmp_path)


def test_serve_without_a_trained_demo_says_to_run_it(tmp_path, capsys):
    pytest.importorskip("gradio")
    assert main(["serve", "--demo", str(tmp_path / "nothing")]) == 2
    assert "run `ca2st demo" in capsys.readouterr().err


def test_serve_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "ca2st\[web\]"'):
        import_gradio()
    assert main(["serve"]) == 2
    assert 'pip install "ca2st[web]"' in capsys.readouterr().err


def test_the_page_shows_what_predict_gives(page, media):
    short, long, _ = media
    assert page.panels == ["classes"] and page.model.class_names is None  # the names come from classes.txt
    result = page.analyse(short)
    assert result.ok and result.timeline is None
    assert result.labels == {"classes": {e["name"]: e["prob"] for e in expected_top(page, short)}}
    assert set(result.labels["classes"]) <= set(NAMES) and "1 view per clip" in result.message
    window = page.clip_seconds(FPS)
    assert window == pytest.approx(1.28)
    result = page.analyse(long)
    assert result.labels["classes"] == {e["name"]: e["prob"] for e in expected_top(page, long, window)}
    assert result.timeline.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.timeline.parent.parent == page.work_dir
    assert "6 windows of 1.28 s every 0.64 s" in result.message
    if not hasattr(ca2st, "explain"):
        assert result.maps == [] and result.maps_note == NO_MAPS
    else:
        assert result.maps and all(path.exists() for path, _ in result.maps)


def test_a_broken_file_or_an_unexpected_failure_gives_a_message_not_a_trace(page, media, monkeypatch):
    result = page.analyse(media[2])
    assert not result.ok and result.message.startswith("**Could not read broken.mp4:**")
    assert "not a readable media file" in result.message
    monkeypatch.setattr(page, "run", lambda *a: 1 / 0)
    result = page.analyse(media[0])
    assert not result.ok and "unexpected error" in result.message and "ZeroDivision" not in result.message


def test_composition_models_show_verbs_nouns_and_actions(media):
    model = randomize_(smoke_model(composition=True, composition_classes={"verb": 3, "noun": 4})).eval()
    model.class_names = {"verb": ["take", "put", "open"], "noun": ["cup", "pan", "lid", "tap"]}
    page = VideoPage(model, topk=2)
    assert page.panels == ["verbs", "nouns", "actions"]
    result = page.analyse(media[0])
    pred = ca2st.predict(model, media[0], topk=2, progress=False)
    assert result.labels["verbs"] == {e["name"]: e["prob"] for e in pred.top("verb")}
    assert result.labels["nouns"] == {e["name"]: e["prob"] for e in pred.top("noun")}
    assert result.labels["actions"] == {a["name"]: a["prob"] for a in pred.actions()}


# --------------------------------------------------------------------------------------------- in a browser

BROWSER = [shutil.which("chromium"), shutil.which("chromedriver")]
MISSING = [
    name
    for name, found in [
        ("chromium", BROWSER[0]),
        ("chromedriver (Debian: chromium-driver)", BROWSER[1]),
        ("selenium", importlib.util.find_spec("selenium")),
        ("gradio", importlib.util.find_spec("gradio")),
    ]
    if not found
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(BROWSER[1]))
    yield driver
    driver.quit()


@pytest.mark.skipif(bool(MISSING), reason=f"the browser test needs {', '.join(MISSING)}")
def test_the_page_in_headless_chromium(page, media, demo_dir, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    short, long, broken = media
    expected = expected_top(page, long, page.clip_seconds(FPS))[0]["name"]
    port = free_port()
    app = launch(page, port=port, block=False)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)

        def text(selector: str) -> str:
            found = browser.find_elements(By.CSS_SELECTOR, selector)
            return found[0].text if found else ""

        def upload(path) -> None:
            clear = browser.find_elements(By.CSS_SELECTOR, "#video button[aria-label='Clear']")
            if clear:
                clear[0].click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video input[type=file]"))
            browser.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(path))

        upload(long)
        wait.until(lambda d: text("#labels-classes [data-testid=label-output-value]") == expected)
        wait.until(
            lambda d: (
                d.execute_script("const i = document.querySelector('#timeline img'); return i && i.complete")
                and d.execute_script("return document.querySelector('#timeline img').naturalWidth") > 100
            )
        )
        assert "long.mp4" in text("#message")
        note = "unavailable" if not hasattr(ca2st, "explain") else None
        if note:
            assert note in text("#maps-note")
        else:
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#maps img"))
        browser.save_screenshot(str(tmp_path / "page.png"))
        assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        upload(broken)
        wait.until(lambda d: "not a readable media file" in text("#message"))
        assert "Could not read broken.mp4" in text("#message") and "Traceback" not in browser.page_source
        assert not browser.find_elements(By.CSS_SELECTOR, "#labels-classes [data-testid=label-output-value]")

        browser.find_element(By.XPATH, "//button[normalize-space()='val_0_000.mp4']").click()  # an example
        wait.until(lambda d: "val_0_000.mp4" in text("#message"))
        assert text("#labels-classes [data-testid=label-output-value]") == expected_top(page, short)[0]["name"]
        browser.save_screenshot(str(tmp_path / "example.png"))
    finally:
        app.close()


def test_a_taken_port_is_reported_as_such(page):
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve on 127.0.0.1:{port}.*choose another --port"):
            launch(page, port=port, block=False)


def test_the_maps_panel_uses_ca2st_explain_where_it_exists(page, media, monkeypatch):
    class Explanation:
        def save(self, out_dir):
            out_dir.mkdir(parents=True)
            (out_dir / "layer0.png").write_bytes(b"png")
            (out_dir / "maps.pt").write_bytes(b"tensors")
            return {"layer 0": out_dir / "layer0.png", "tensors": out_dir / "maps.pt"}

    seen = []
    monkeypatch.setattr(
        ca2st, "explain", lambda model, video: seen.append((model, video)) or Explanation(), raising=False
    )
    result = page.analyse(media[0])
    assert seen == [(page.model, media[0])] and [(p.name, c) for p, c in result.maps] == [("layer0.png", "layer 0")]
    monkeypatch.setattr(ca2st, "explain", lambda model, video: 1 / 0)
    result = page.analyse(media[0])  # the labels still show
    assert result.ok and result.maps == [] and "could not be drawn" in result.maps_note


def test_the_work_folder_keeps_the_last_requests_images_only(tmp_path):
    from ca2st import serve

    page = VideoPage(smoke_model(), work_dir=tmp_path / "work")
    made = []
    for i in range(serve.KEPT_REQUESTS + 5):
        made.append(page.request_dir())
        (made[-1] / "map.png").write_bytes(b"png")
        os.utime(made[-1], ns=(i * 10**9, i * 10**9))  # request i is the i-th newest
    left = sorted(p for p in page.work_dir.iterdir())
    assert left == sorted(made[-serve.KEPT_REQUESTS :])
    temporary = VideoPage(smoke_model())  # no work_dir: a temporary folder, removed at exit
    assert temporary.work_dir.name.startswith("ca2st-serve-") and temporary.work_dir.is_dir()
