"""The search page in a real browser: Playwright driving Debian's chromium against `manage.py serve`.

Screenshots of the main states are saved under test-artifacts/ (gitignored).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from mmsearch.library import Library
from mmsearch.settings import load_settings

from .media import make_collection, picture, tone_wav
from .sounds import write_wav

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required"]
TIMEOUT = 20_000  # ms
expect.set_options(timeout=TIMEOUT)  # expect() waits as long as the page does (a loaded CI box is slow)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(base: Path, root: Path, env: dict):
    """Index ``root`` into the data dir of ``env`` and serve it with `manage.py serve` (waitress)."""
    Library(load_settings({}, env=env)).run_index([root])
    port = _free_port()
    log = open(base / "serve.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port)],
                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                if json.load(response) == {"status": "ok"}:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("serve did not start: " + (base / "serve.log").read_text()[-2000:])
            time.sleep(0.3)
    try:
        yield {"url": url, "root": root, "port": port, "env": env}
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An indexed collection served by `manage.py serve` (waitress) on a free port."""
    base = tmp_path_factory.mktemp("browser")
    root = base / "media"
    make_collection(root)
    for n, freq in enumerate((330.0, 550.0)):
        tone_wav(root / f"tone{n}.wav", freq, seconds=1.0)
    t = np.arange(16000) / 16000  # 1 s: a loud first half, then a quiet one (write_wav peaks at 0.8)
    write_wav(root / "fade.wav", np.sin(2 * np.pi * 440 * t) * np.where(t < 0.5, 1.0, 0.1))
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(base / "data"), "MMSEARCH_MODEL": "tiny",
           "MMSEARCH_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024)}
    yield from _serve(base, root, env)


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory):
    """A library with nothing in it, as a newcomer's first `serve` has."""
    base = tmp_path_factory.mktemp("empty")
    (base / "nothing").mkdir()
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(base / "data"), "MMSEARCH_MODEL": "tiny"}
    yield from _serve(base, base / "nothing", env)


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _page(browser, url: str, **options):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url, **options)
    context.grant_permissions(["microphone"], origin=url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors  # no uncaught JavaScript errors


@pytest.fixture
def page(browser, server) -> Page:
    yield from _page(browser, server["url"])


@pytest.fixture
def tokyo_page(browser, server) -> Page:
    """A reader in Tokyo (UTC+9, no daylight saving) with British date formats."""
    yield from _page(browser, server["url"], timezone_id="Asia/Tokyo", locale="en-GB")


@pytest.fixture
def empty_page(browser, empty_server) -> Page:
    yield from _page(browser, empty_server["url"])


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def cards(page: Page):
    return page.locator("#results .card")


def drop_file(page: Page, data: bytes, name: str, mime: str) -> None:
    """Drag a file onto the page the way a user drops one from the desktop."""
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""", [base64.b64encode(data).decode(), name, mime])
    page.dispatch_event("#results", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event("#results", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#results", "drop", {"dataTransfer": transfer})


def test_type_a_query_and_see_results(page, server):
    page.goto("/")
    shot(page, "01-start")
    page.fill("#q", "red round shapes")
    page.keyboard.press("Enter")  # keyboard use: Enter searches
    expect(cards(page).first).to_be_visible()
    expect(page.locator("#status")).to_contain_text("results")
    assert cards(page).count() > 5
    assert "q=red+round+shapes" in page.url
    scores = [float(s) for s in page.locator("#results .card .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0
    # the captioned picture says what its caption and its pixels scored
    why = page.locator("#results .card", has=page.locator(".name", has_text="red.jpg")).locator(".why")
    expect(why).to_contain_text('"red round shapes"')
    expect(why).to_contain_text("caption 0.")
    # thumbnails load: the image cards' pictures have pixels
    page.wait_for_function("""() => [...document.querySelectorAll('.card.image img.thumb')]
                              .every((img) => img.complete && img.naturalWidth > 0)""")
    shot(page, "02-results")
    # the URL reflects the query: reloading it gives the same results
    before = [cards(page).nth(i).get_attribute("data-id") for i in range(cards(page).count())]
    page.reload()
    expect(cards(page).first).to_be_visible()
    assert page.input_value("#q") == "red round shapes"
    assert [cards(page).nth(i).get_attribute("data-id") for i in range(cards(page).count())] == before


def test_modality_chips_k_and_fusion_are_in_the_url(page, server):
    page.goto("/?q=sea+-red&modality=text&k=3&fusion=rrf")
    expect(cards(page).first).to_be_visible()
    # two parts, fused late: each card says what each part scored and where it ranked
    expect(cards(page).first.locator(".why")).to_contain_text('−"red"')
    expect(cards(page).first.locator(".why")).to_have_text(re.compile(r'^"sea" -?[0-9.]+ #[0-9]+ · −"red"'))
    assert page.locator('.chip[data-modality="text"]').get_attribute("aria-pressed") == "true"
    assert page.input_value("#fusion") == "rrf" and page.input_value("#k") == "3"
    assert cards(page).count() == 3
    assert set(cards(page).evaluate_all("cards => cards.map((c) => c.dataset.modality)")) == {"text"}
    page.click('.chip[data-modality="image"]')  # toggling a chip searches again
    page.wait_for_url("**modality=image**")
    expect(page.locator('#status[data-state="done"]')).to_contain_text("results")
    assert set(cards(page).evaluate_all("cards => cards.map((c) => c.dataset.modality)")) <= {"text", "image"}
    text_card = page.locator("#results .card.text").first
    expect(text_card.locator(".visual")).not_to_be_empty()  # a snippet for text
    shot(page, "03-filtered")


def test_drop_an_image_and_see_results(page, server):
    page.goto("/")
    data = (server["root"] / "green.png").read_bytes()
    drop_file(page, data, "green.png", "image/png")
    expect(page.locator('.qchip[data-kind="image"]')).to_be_visible()
    first = cards(page).first
    expect(first.locator(".name")).to_have_text("green.png")  # the same picture ranks first
    expect(page.locator("#status")).to_contain_text("results")
    assert float(first.locator(".score").inner_text()) > 0.99
    shot(page, "04-dropped-image")


def test_paste_an_image_and_pick_a_sound_file(page, server, tmp_path):
    page.goto("/")
    page.evaluate(
        """async (b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], "image.png", { type: "image/png" }));
            window.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data }));
        }""", base64.b64encode((server["root"] / "sub dir" / "blue.webp").read_bytes()).decode())
    expect(cards(page).first.locator(".name")).to_have_text("blue.webp")
    page.set_input_files("#file-input", str(server["root"] / "tone0.wav"))
    expect(page.locator('.qchip[data-kind="audio"]')).to_be_visible()
    expect(cards(page).first.locator(".name")).to_have_text("tone0.wav")
    expect(page.locator("#status")).to_contain_text("results")


def test_play_an_audio_result(page, server):
    page.goto("/?q=a+tone&modality=audio")
    audio_card = page.locator("#results .card.audio").first
    expect(audio_card).to_be_visible()
    page.wait_for_function("""() => { const img = document.querySelector('.card.audio .wave img');
                                      return img && img.complete && img.naturalWidth === 320; }""")
    audio_card.locator(".wave").click()  # clicking the waveform loads the sound and plays it from there
    page.wait_for_function("""() => { const a = document.querySelector('.card.audio audio');
                                      return a && !a.paused && a.currentTime > 0; }""")
    assert page.evaluate("document.querySelector('.card.audio audio').duration") > 0.4
    page.wait_for_function("() => parseFloat(document.querySelector('.card.audio .played').style.width) > 0")
    shot(page, "05-audio-playing")


def test_more_like_this_and_detail_view(page, server):
    page.goto("/?q=yellow&modality=image")
    expect(cards(page).first).to_be_visible()
    target = cards(page).nth(1)
    target_id, target_name = target.get_attribute("data-id"), target.locator(".name").inner_text()
    target.locator("button.like").click()
    page.wait_for_url(f"**like={target_id}**")
    expect(page.locator('.qchip[data-kind="like"]')).to_contain_text(target_name)
    expect(page.locator(f'#results .card[data-id="{target_id}"]')).to_have_count(0)
    expect(page.locator('#status[data-state="done"]')).to_contain_text("results")
    assert page.input_value("#q") == ""
    ids = cards(page).evaluate_all("cards => cards.map((c) => c.dataset.id)")
    assert ids and target_id not in ids  # the item itself is left out of "more like this"
    shot(page, "06-more-like-this")
    cards(page).first.locator("button.details").click()
    dialog = page.locator("dialog#detail")
    expect(dialog).to_be_visible()
    expect(dialog.locator("table.meta")).to_contain_text("path")
    expect(dialog.locator("#detail-open")).to_have_attribute("href", f"/api/items/{ids[0]}/media")
    shot(page, "07-detail")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.go_back()  # history: back to the words query
    expect(page.locator("#q")).to_have_value("yellow")


def record(page: Page, ms: int) -> None:
    """Record ms of the fake microphone and search with it."""
    page.click("#mic")
    expect(page.locator("#mic")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(ms)
    page.click("#mic")
    expect(page.locator('.qchip[data-kind="audio"]')).to_contain_text("recording")
    expect(page.locator("#status")).to_contain_text("results")


def test_record_from_the_microphone(page, server):
    page.goto("/?modality=audio")
    record(page, 1500)
    assert set(cards(page).evaluate_all("cards => cards.map((c) => c.dataset.modality)")) == {"audio"}


def test_a_bad_upload_shows_an_error(page, server, tmp_path):
    page.goto("/")
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file, not a picture\n" * 10)
    page.set_input_files("#file-input", str(fake))
    status = page.locator("#status.error")
    expect(status).to_be_visible()
    expect(status).to_contain_text("image")
    assert cards(page).count() == 0
    shot(page, "08-bad-upload")
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x00" * (5 * 1024 * 1024))
    page.set_input_files("#file-input", str(big))
    expect(page.locator("#status.error")).to_contain_text("too large")
    page.fill("#q", "still works")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("results")


def test_loading_empty_and_error_states(page, server):
    page.goto("/")
    release = {"go": False}

    def slow_empty(route):
        while not release["go"]:
            page.wait_for_timeout(50)
        route.fulfill(status=200, content_type="application/json", body='{"results": [], "took_ms": 1.0}')

    page.route("**/api/search", slow_empty)
    page.fill("#q", "nothing like this")
    page.keyboard.press("Enter")
    expect(page.locator("#status.loading")).to_be_visible()
    shot(page, "09-loading")
    release["go"] = True
    expect(page.locator("#status.empty")).to_contain_text("No results")
    shot(page, "10-empty")
    page.unroute("**/api/search")
    page.fill("#q", "")
    page.keyboard.press("Enter")
    expect(page.locator("#status.error")).to_be_visible()
    page.goto("/?q=x&k=5000")
    expect(page.locator("#status.error")).to_contain_text("k must be")


def test_a_1gb_upload_is_refused_and_the_server_keeps_serving(server):
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as sock:
        sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 1073741824\r\n\r\n" + b"\x00" * 65536)
        reply = sock.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    with urllib.request.urlopen(server["url"] + "/api/search?q=apple&k=2", timeout=10) as response:
        assert len(json.load(response)["results"]) == 2


def test_new_items_appear_while_serving(server, tmp_path):
    """A separate index run adds items; the running server finds them within seconds, without a restart."""
    extra = tmp_path / "later"
    extra.mkdir()
    picture(77, (120, 90)).save(extra / "later.png")
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "index", str(extra)], env=server["env"], cwd=ROOT,
                   check=True, capture_output=True)
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(server["url"] + "/api/search?q=later&k=100", timeout=10) as response:
            names = [Path(r["path"]).name for r in json.load(response)["results"]]
        if "later.png" in names or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "later.png" in names


# --- the page as a newcomer sees it -----------------------------------------------------------------
def _api(server, path: str):
    with urllib.request.urlopen(server["url"] + path, timeout=10) as response:
        return json.load(response)


def _item_named(server, query: str, name: str) -> dict:
    found = [r for r in _api(server, f"/api/search?{query}&k=100")["results"] if r["name"] == name]
    assert found, f"{name} not found by {query}"
    return found[0]


def test_sound_cards_show_their_duration_before_playing(page, server):
    page.goto("/?q=a+tone&modality=audio")
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    by_name = lambda name: page.locator("#results .card.audio", has=page.locator(".name", has_text=name))
    expect(by_name("tone0.wav").locator(".length")).to_have_text("0:01.0")  # the stored duration
    expect(by_name("beep.wav").locator(".length")).to_have_text("0:00.5")
    # the players know their length (their controls read 0:00 / 0:01) without anything being played
    page.wait_for_function("""() => [...document.querySelectorAll('.card.audio audio')]
                              .every((a) => a.readyState >= 1 && a.duration > 0)""")
    assert page.evaluate("""[...document.querySelectorAll('.card.audio audio')]
                            .every((a) => a.paused && a.currentTime === 0)""")
    shot(page, "11-sound-durations")


def _wave_heights(page: Page, name: str) -> dict:
    """Per pixel column, how many pixels of the card's waveform picture are drawn (opaque), as seen."""
    picture = page.locator("#results .card.audio", has=page.locator(".name", has_text=name)).locator(".wave img")
    return picture.evaluate("""async (img) => {
        await img.decode();
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const g = canvas.getContext("2d"); g.drawImage(img, 0, 0);
        const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
        const heights = [], shades = new Set();
        for (let x = 0; x < canvas.width; x++) {
            let n = 0;
            for (let y = 0; y < canvas.height; y++) {
                const i = (y * canvas.width + x) * 4;
                if (data[i + 3] > 200) { n++; shades.add(data[i] + "," + data[i + 1] + "," + data[i + 2]); }
            }
            heights.push(n);
        }
        return { heights, height: canvas.height, shades: shades.size };
    }""")


def test_waveforms_show_how_loud_a_sound_is(page, server):
    page.goto("/?q=a+tone&modality=audio")
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    tone = _wave_heights(page, "tone0.wav")  # a steady tone at 37% of full scale
    inner = tone["heights"][4:-4]
    assert max(inner) < 0.6 * tone["height"], "a steady tone at a third of full scale fills the picture"
    assert min(inner) > 0.2 * tone["height"] and max(inner) - min(inner) <= 4  # an even band, drawn everywhere
    assert tone["shades"] >= 2  # peaks and the RMS body in two shades
    fade = _wave_heights(page, "fade.wav")  # loud (0.8), then ten times quieter
    half = len(fade["heights"]) // 2
    loud, quiet = np.median(fade["heights"][4:half - 4]), np.median(fade["heights"][half + 4:-4])
    assert loud > 0.6 * fade["height"] and quiet < loud / 3
    shot(page, "12-waveforms")


def test_detail_view_shows_units_and_local_times(tokyo_page, server):
    page = tokyo_page
    item = _api(server, f"/api/items/{_item_named(server, 'q=a+tone&modality=audio', 'tone0.wav')['id']}")
    indexed = dt.datetime.fromisoformat(item["metadata"]["indexed_at"])
    assert indexed.utcoffset() == dt.timedelta(0), item["metadata"]["indexed_at"]  # the API says UTC
    page.goto("/?q=a+tone&modality=audio")
    page.locator("#results .card.audio", has=page.locator(".name", has_text="tone0.wav")).locator(
        "button.details").click()
    meta = page.locator("dialog#detail table.meta")
    row = lambda key: meta.locator(f'tr[data-key="{key}"] td')
    expect(row("size")).to_have_text("32.0 KB")  # 32,044 bytes
    expect(row("duration")).to_have_text("0:01.0")
    expect(row("sample_rate")).to_have_text("16 kHz")
    expect(row("channels")).to_have_text("mono")
    in_tokyo = indexed.astimezone(dt.timezone(dt.timedelta(hours=9)))  # the reader's clock, not UTC's
    shown = row("indexed_at").inner_text()
    assert f"{in_tokyo:%H:%M}" in shown and str(in_tokyo.year) in shown and str(in_tokyo.day) in shown, shown
    assert not re.search(r"\d{4}-\d\d-\d\dT", meta.inner_text())  # no raw ISO timestamps
    shot(page, "13-detail-units")


def test_late_fusion_shows_ranks_not_tiny_sums(page, server):
    page.goto("/?q=sea+-red&fusion=rrf&k=8")
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    for fusion in ("rrf", "relative", "dbsf"):
        if fusion != "rrf":
            page.select_option("#fusion", fusion)
            page.wait_for_url(f"**fusion={fusion}**")
            expect(page.locator('#status[data-state="done"]')).to_be_visible()
        scores = page.locator("#results .card .score").all_inner_texts()
        assert scores and all(re.fullmatch(r"#\d+", s) for s in scores), (fusion, scores)
        ranks = [int(s[1:]) for s in scores]
        assert ranks[0] == 1 and ranks == sorted(ranks) and ranks[-1] <= len(ranks), (fusion, ranks)
        expect(page.locator("#results .card .score").first).to_have_attribute(
            "title", re.compile(f"rank 1 after {fusion} fusion"))
    shot(page, "14-late-fusion-ranks")


def test_a_like_chip_names_its_item(page, server):
    green = _item_named(server, "q=green", "green.png")
    page.goto(f"/?like={green['id']}")  # as a shared or reloaded link, not by clicking "More like this"
    chip = page.locator('.qchip[data-kind="like"]')
    expect(chip).to_have_text(re.compile(r"like: green\.png"))
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    assert "#" not in chip.inner_text()


def test_the_page_says_how_many_items_the_library_holds(page, server):
    stats = _api(server, "/api/stats")
    page.goto("/")
    expect(page.locator("#library")).to_contain_text(f"{stats['items']} items")
    expect(page.locator("#library")).to_contain_text(f"{stats['by_modality']['audio']} sounds")
    expect(page.locator("#empty-library")).to_be_hidden()
    page.fill("#q", "apple")
    page.keyboard.press("Enter")
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    expect(page.locator("#library")).to_be_visible()  # still there beside the results
    expect(page.locator("#library")).to_contain_text(f"{stats['items']} items")


def test_an_empty_library_says_how_to_fill_it(empty_page, empty_server):
    page = empty_page
    page.goto("/")
    expect(page.locator("#library")).to_have_text("0 items")
    expect(page.locator("#empty-library")).to_be_visible()
    expect(page.locator("#empty-library")).to_contain_text("Nothing indexed yet: run mmsearch index PATH")
    shot(page, "15-empty-library")
    page.fill("#q", "apple")
    page.keyboard.press("Enter")
    expect(page.locator("#status.empty")).to_have_text("Nothing indexed yet: run `mmsearch index PATH`.")


CSP_LISTENER = """document.addEventListener("securitypolicyviolation",
    (e) => (window.__csp = window.__csp || []).push(e.violatedDirective + " " + e.blockedURI));"""


def test_the_page_works_under_its_csp_without_a_violation(browser, server):
    """Search by words, a picked picture (a blob: preview) and a microphone recording, open a detail and
    play a sound under the page's Content-Security-Policy: no CSP error in the console, no violation event."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server["url"])
    context.grant_permissions(["microphone"], origin=server["url"])
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    console = []
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    try:
        response = page.goto("/?q=red&modality=image")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        expect(cards(page).first).to_be_visible()
        page.wait_for_function("""() => [...document.querySelectorAll('.card.image img.thumb')]
                                  .every((img) => img.complete && img.naturalWidth > 0)""")
        page.set_input_files("#file-input", str(server["root"] / "green.png"))
        page.wait_for_function("""() => { const img = document.querySelector('.qchip img');
                                          return img && img.src.startsWith('blob:') && img.naturalWidth > 0; }""")
        expect(cards(page).first.locator(".name")).to_have_text("green.png")
        cards(page).first.locator("button.details").click()
        expect(page.locator("dialog#detail img").first).to_be_visible()
        page.keyboard.press("Escape")
        page.goto("/?q=a+tone&modality=audio")
        page.locator("#results .card.audio .wave").first.click()
        page.wait_for_function("""() => { const a = document.querySelector('.card.audio audio');
                                          return a && !a.paused && a.currentTime > 0; }""")
        record(page, 1000)
        assert page.evaluate("window.__csp || []") == []
        assert not [m for m in console if "Content Security Policy" in m], console
        # the watch itself works: an inline style attribute is refused and reported
        page.evaluate("document.body.setAttribute('style', 'color: red')")
        page.wait_for_function("() => (window.__csp || []).length > 0")
        assert any("style-src" in v for v in page.evaluate("window.__csp"))
    finally:
        context.close()


# --- what matched: passages, segments, hybrid words (issue #12, points 3 and 4) ------------------------
LAST_SENTENCE = "Finally the purple elephant danced upon the frozen lighthouse."
MADE_UP_WORD = "zorblax"
MARKUP_NAME = '<img src=x onerror="window.__pwned=1">.txt'
MARKUP_TEXT = ('Markup <b>bold</b> <img src=x onerror="window.__pwned=2"> and '
               '<script>window.__pwned=3</script> tags stay text & nothing else')


def _long_note() -> str:
    """~300 words: a long rambling opening sentence about a river (too long for one passage: it is cut into
    windows of words), then a sentence found nowhere else, the note's last passage on its own. The query is
    that sentence, so its passage matches whatever the (random, tiny) text tower makes of words."""
    words = ("the quiet river flows past old stone houses and green fields where farmers work all day "
             "long").split()
    body = " ".join(words[i % len(words)] + ("," if i % 15 == 14 else "") for i in range(290))
    return "Opening words about a river, " + body + ". " + LAST_SENTENCE


def _sweep(seconds: float = 30.0) -> np.ndarray:
    """A slow rising sweep that grows louder: each 2 s window unlike the others (peak 0.8)."""
    t = np.arange(int(16000 * seconds)) / 16000
    return 0.8 * np.sin(2 * np.pi * (150 * t + 25 * t ** 2)) * (0.3 + 0.7 * t / seconds)


@pytest.fixture(scope="module")
def match_server(tmp_path_factory):
    """A long note, a note with one made-up word, a note full of markup and a 30 s sound, served."""
    base = tmp_path_factory.mktemp("matches")
    root = base / "media"
    root.mkdir()
    (root / "river.txt").write_text(_long_note())
    (root / "odd word.txt").write_text(f"a short note that mentions {MADE_UP_WORD} once")
    (root / MARKUP_NAME).write_text(MARKUP_TEXT)
    (root / "groceries.txt").write_text("milk, eggs and a loaf of bread")
    write_wav(root / "sweep.wav", _sweep(), normalise=False)
    tone_wav(root / "beep.wav")
    env = {**os.environ, "MMSEARCH_DATA_DIR": str(base / "data"), "MMSEARCH_MODEL": "tiny"}
    yield from _serve(base, root, env)


@pytest.fixture
def match_page(browser, match_server) -> Page:
    yield from _page(browser, match_server["url"])


def _card(page: Page, name: str):
    return page.locator("#results .card", has=page.locator(".name", has_text=name))


FORM_FIELDS = """() => {  // the field names of each multipart search the page sends (Playwright sees no file bodies)
    window.__forms = [];
    const send = window.fetch;
    window.fetch = (url, init) => {
        if (init && init.body instanceof FormData) window.__forms.push([...init.body.keys()]);
        return send(url, init);
    };
}"""


def _search_response(page: Page, action) -> dict:
    """Run ``action`` (a search from the page) and return the request's JSON body (or None) and the API's answer."""
    with page.expect_response(lambda r: r.url.endswith("/api/search") and r.request.method == "POST") as info:
        action()
    response = info.value
    assert response.ok, response.text()
    request = response.request
    body = request.post_data_json if "json" in (request.headers.get("content-type") or "") else None
    return {"request": body, "data": response.json()}


def test_a_long_notes_matching_passage_is_its_snippet_with_the_words_marked(match_page, match_server):
    page = match_page
    page.add_init_script(CSP_LISTENER)
    page.goto("/?modality=text")
    got = _search_response(page, lambda: (page.fill("#q", LAST_SENTENCE), page.keyboard.press("Enter")))
    river = next(r for r in got["data"]["results"] if r["name"] == "river.txt")
    match = river["match"]
    assert match["kind"] == "passage" and LAST_SENTENCE in match["text"], match  # the note's last passage
    assert match["chars"][1] == len(_long_note()) and match["chars"][0] > 200
    card = _card(page, "river.txt")
    snippet = card.locator(".visual .snippet")
    expect(snippet).to_have_attribute("data-from", "passage")
    expect(card.locator(".match")).to_have_text("matched: passage")
    shown = snippet.inner_text()
    assert shown.startswith("…") and "Opening words" not in shown  # not the note's opening
    assert shown[1:] in match["text"] and shown.endswith(LAST_SENTENCE), shown
    marks = [m.lower() for m in snippet.locator("mark").all_inner_texts()]
    for word in ("finally", "purple", "elephant", "danced", "upon", "frozen", "lighthouse"):
        assert word in marks, (word, marks)
    assert "a" not in marks  # one-letter words are not marked
    # the marked words are in sight: inside the card's snippet box, not cut off below it
    box = card.locator(".visual").bounding_box()
    mark = snippet.locator("mark", has_text="lighthouse").bounding_box()
    assert box["y"] <= mark["y"] and mark["y"] + mark["height"] <= box["y"] + box["height"] + 1, (box, mark)
    # the other notes' snippets are their openings
    expect(_card(page, "groceries.txt").locator(".snippet")).to_have_attribute("data-from", "opening")
    assert page.evaluate("window.__csp || []") == []  # marks are elements, not inline styles or markup
    shot(page, "16-passage-snippet")


def test_markup_in_a_notes_text_and_name_is_shown_as_text(match_page, match_server):
    page = match_page
    page.goto("/?q=markup+tags+bold&modality=text&k=10")
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    card = page.locator("#results .card", has=page.locator(".name", has_text="onerror"))
    expect(card).to_have_count(1)
    expect(card.locator(".name")).to_have_text(MARKUP_NAME)
    snippet = card.locator(".snippet")
    expect(snippet).to_have_text(MARKUP_TEXT)  # every character as written, < and > included
    assert card.locator("img, script, b, iframe").count() == 0  # no element came from the note
    marks = snippet.locator("mark").all_inner_texts()
    assert marks == ["Markup", "bold", "tags"], marks  # matched whole words only: not the "b" of <b>
    assert page.evaluate("window.__pwned") is None
    card.locator("button.details").click()  # the detail view, too
    expect(page.locator("dialog#detail pre")).to_have_text(MARKUP_TEXT)
    expect(page.locator("#detail-title")).to_have_text(MARKUP_NAME)
    assert page.locator("dialog#detail img, dialog#detail script, dialog#detail b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_the_hybrid_toggle_sends_hybrid_and_finds_a_made_up_word(match_page, match_server):
    page = match_page
    page.goto("/")
    page.fill("#q", MADE_UP_WORD)
    plain = _search_response(page, lambda: page.keyboard.press("Enter"))
    assert "hybrid" not in plain["request"]
    got = _search_response(page, lambda: page.check("#hybrid"))  # toggling it searches again
    assert got["request"]["hybrid"] is True and got["request"]["text"] == MADE_UP_WORD
    page.wait_for_url("**hybrid=1**")
    first = got["data"]["results"][0]
    assert first["name"] == "odd word.txt", [r["name"] for r in got["data"]["results"]]
    assert first["parts"][0]["lexical"]["rank"] == 1  # the full-text ranking put it first
    card = cards(page).first
    expect(card.locator(".name")).to_have_text("odd word.txt")
    expect(card.locator(".score")).to_have_text("#1")  # fused by RRF: ranks, as late fusion shows them
    expect(card.locator(".score")).to_have_attribute("title", re.compile("after hybrid fusion"))
    expect(card.locator(".why")).to_contain_text("words #1")
    expect(card.locator(".snippet mark")).to_have_text(MADE_UP_WORD)
    shot(page, "17-hybrid")
    # kept in the URL: a reload searches hybrid again
    again = _search_response(page, page.reload)
    assert again["request"]["hybrid"] is True
    expect(page.locator("#hybrid")).to_be_checked()
    # a search without words never sends hybrid (the API would refuse it): more like this, a file
    like = _search_response(page, lambda: cards(page).first.locator("button.like").click())
    assert "hybrid" not in like["request"] and "text" not in like["request"]
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    page.fill("#q", f"-{MADE_UP_WORD} like:{first['id']}")  # words, but none to look up
    negated = _search_response(page, lambda: page.keyboard.press("Enter"))
    assert "hybrid" not in negated["request"]
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    page.evaluate(FORM_FIELDS)
    page.click('.qchip[data-kind="like"] button')  # drop the like: chip, and the words: a file alone
    page.fill("#q", "")
    upload = _search_response(page, lambda: page.set_input_files("#file-input", str(match_server["root"] / "beep.wav")))
    assert page.evaluate("window.__forms.at(-1)") == ["audio", "k", "offset", "fusion", "explain"]
    assert upload["data"]["results"][0]["score"] > 0.99  # a similarity, not an RRF sum
    expect(cards(page).first.locator(".score")).not_to_have_text(re.compile("#"))
    page.fill("#q", "a sound")  # words and a file: hybrid goes with the form
    both = _search_response(page, lambda: page.keyboard.press("Enter"))
    fields = page.evaluate("window.__forms.at(-1)")
    assert "hybrid" in fields and "audio" in fields and "text" in fields, fields
    assert all(r["score"] <= 2 / 60 for r in both["data"]["results"])  # RRF sums
    page.uncheck("#hybrid")
    page.wait_for_url(lambda url: "hybrid" not in url)


def test_a_sound_matched_by_a_segment_plays_from_it(match_page, match_server, tmp_path):
    """The query is seconds 20–22 of the long sound: whichever segment the API says matched, the card's
    player starts there, the card says where, and the waveform marks it."""
    page = match_page
    clip = tmp_path / "clip.wav"
    write_wav(clip, _sweep()[20 * 16000:22 * 16000], normalise=False)
    page.add_init_script(CSP_LISTENER)
    page.goto("/?modality=audio")
    got = _search_response(page, lambda: page.set_input_files("#file-input", str(clip)))
    sweep = next(r for r in got["data"]["results"] if r["name"] == "sweep.wav")
    match = sweep["match"]
    assert match["kind"] == "segment", match
    start, end, duration = match["start"], match["end"], sweep["metadata"]["duration"]
    card = _card(page, "sweep.wav")
    expect(card.locator(".match")).to_have_text("matched: segment")
    clock = lambda s: f"{int(s) // 60}:{int(s) % 60:02d}"
    expect(card.locator(".segment-at")).to_have_text(f"matched at {clock(start)}–{clock(math.ceil(end - 1e-6))}")
    audio = card.locator("audio")
    audio.evaluate("(a) => new Promise((done) => a.readyState >= 1 ? done() : a.addEventListener('loadedmetadata', done))")
    page.wait_for_function("(a) => a.readyState >= 1 && !a.seeking", arg=audio.element_handle())
    position = audio.evaluate("(a) => ({ t: a.currentTime, paused: a.paused })")
    assert position["t"] >= start - 1e-3 and position["paused"], (position, match)  # there, not playing
    overlay = card.locator(".wave .segment")
    expect(overlay).to_be_visible()
    left, width = overlay.evaluate("(o) => [parseFloat(o.style.left), parseFloat(o.style.width)]")
    assert left == pytest.approx(100 * start / duration, abs=0.01)
    assert width == pytest.approx(100 * (end - start) / duration, abs=0.01)
    wave, mark = card.locator(".wave").bounding_box(), overlay.bounding_box()
    assert mark["x"] == pytest.approx(wave["x"] + wave["width"] * start / duration, abs=2)
    # the other sound matched as a whole: it starts at 0 and has no marked segment
    beep = _card(page, "beep.wav")
    if beep.count():
        expect(beep.locator(".wave .segment")).to_have_count(0)
    shot(page, "18-segment")
    card.locator(".segment-at").click()  # plays the matched part
    page.wait_for_function("(a) => !a.paused && a.currentTime >= " + str(start), arg=audio.element_handle())
    assert page.evaluate("window.__csp || []") == []  # the overlay is placed through CSSOM, not a style attribute


def test_match_kinds_and_query_words_from_any_api_answer(page, server):
    """Each kind of match is labelled; captions' words are marked; hostile text in any field stays text."""
    hostile = '<img src=x onerror="window.__pwned=1"><b>sea</b>'
    results = [
        {"id": 1, "modality": "image", "name": "a.png", "path": "/a.png", "score": 0.9, "media_url": "/x",
         "thumbnail_url": "/x", "caption": "The sea, seas and seaside " + hostile,
         "match": {"kind": "caption", "score": 0.9, "text": "The sea, seas and seaside " + hostile}},
        {"id": 2, "modality": "text", "name": hostile, "path": "/b.txt", "score": 0.8, "media_url": "/x",
         "snippet": "opening", "match": {"kind": "lexical", "score": 3.2}},
        {"id": 3, "modality": "text", "name": "c.txt", "path": "/c.txt", "score": 0.7, "media_url": "/x",
         "snippet": "opening", "match": {"kind": "caption", "score": 0.7, "text": "A SEA caption " + hostile}},
        {"id": 4, "modality": "text", "name": "d.txt", "path": "/d.txt", "score": 0.6, "media_url": "/x",
         "snippet": "the Sea at the start", "match": {"kind": "content", "score": 0.6}},
    ]
    page.route("**/api/search", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps({"results": results, "fusion": "early"})))
    page.goto('/?q=%22the+sea%22+2:calm+-rocks+like:5+a')
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    kinds = page.locator("#results .card .match").all_inner_texts()
    assert kinds == ["matched: caption", "matched: words", "matched: caption", "matched: content"], kinds
    assert page.locator("#results .card").nth(0).locator(".caption mark").all_inner_texts() == ["The", "sea", "seas", "sea"]
    text_card = page.locator("#results .card").nth(2)
    expect(text_card.locator(".snippet")).to_have_text("A SEA caption " + hostile)
    assert text_card.locator(".snippet mark").all_inner_texts() == ["SEA", "sea"]
    expect(page.locator("#results .card").nth(1).locator(".name")).to_have_text(hostile)
    assert page.locator("#results .card").nth(3).locator(".snippet mark").all_inner_texts() == ["the", "Sea", "the"]
    assert page.locator("#results img:not(.thumb), #results b, #results script").count() == 0
    assert page.evaluate("window.__pwned") is None
    words = page.evaluate("window.mmFormat.queryWords(document.querySelector('#q').value)")
    assert sorted(words) == ["calm", "sea", "the"]  # no "rocks" (negated), no like:, no one-letter words
    assert page.evaluate("""[window.mmFormat.hasWords('like:5'), window.mmFormat.hasWords('-rocks like:5'),
                             window.mmFormat.hasWords('0.5:waves'), window.mmFormat.hasWords('"  "')]""") == [
        False, False, True, False]


# --- tags: chips on cards and in the detail view, the tags filter --------------------------------------------
@pytest.fixture
def tagged(server):
    """Three of the served images tagged (issue #15's tag sets), as a classifier run would leave them; the set
    is dropped again afterwards, so the other tests see a library without tags."""
    from mmsearch.search.store import Store
    store = Store(load_settings({}, env=server["env"]).database_url)
    ids = {Path(row[1]).name: row[0] for row in store.index_rows()}
    rows = [(ids["red.jpg"], "striped", 0.9), (ids["green.png"], "striped", 0.8), (ids["green.png"], "blue", 0.6),
            (ids["purple.gif"], "striped", 0.7), (ids["purple.gif"], "<b>markup</b>", 0.2)]
    store.tags.replace("browser-test", "zero-shot", {"labels": ["striped", "blue"]}, rows)
    yield ids
    store.tags.delete("browser-test")
    store.engine.dispose()


def test_a_tag_chip_filters_the_results_and_is_removed_from_the_filters(page, server, tagged):
    page.add_init_script(CSP_LISTENER)
    page.goto("/?q=shapes&modality=image&k=24")
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    red = _card(page, "red.jpg")
    expect(red.locator("button.tag")).to_have_text(["striped"])
    expect(_card(page, "blue.webp").locator("button.tag")).to_have_count(0)  # untagged: no chips
    expect(_card(page, "purple.gif").locator("button.tag")).to_have_text(["striped", "<b>markup</b>"])  # as text
    assert page.locator("#results .tags b").count() == 0 and page.locator("#tag-filters").is_hidden()

    got = _search_response(page, lambda: red.locator("button.tag", has_text="striped").click())
    assert got["request"]["filters"] == {"tags": ["striped"]} and got["request"]["modality"] == ["image"]
    names = sorted(r["name"] for r in got["data"]["results"])
    assert names == ["green.png", "purple.gif", "red.jpg"]
    assert all("striped" in [t["label"] for t in r["tags"]] for r in got["data"]["results"])
    expect(cards(page)).to_have_count(3)
    expect(page.locator("#tag-filters .tag-filter .label")).to_have_text(["tag: striped"])
    page.wait_for_url("**tag=striped**")
    shot(page, "19-tag-filter")

    _card(page, "green.png").locator("button.details").click()  # the detail view's chips add to the filter
    expect(page.locator("#detail-tags button.tag")).to_have_text(["striped", "blue"])
    both = _search_response(page, lambda: page.locator("#detail-tags button.tag", has_text="blue").click())
    assert both["request"]["filters"] == {"tags": ["striped", "blue"]}
    assert [r["name"] for r in both["data"]["results"]] == ["green.png"]
    expect(page.locator("dialog#detail")).not_to_be_visible()
    expect(page.locator("#tag-filters .tag-filter")).to_have_count(2)

    again = _search_response(page, page.reload)  # the filter is in the URL
    assert again["request"]["filters"] == {"tags": ["striped", "blue"]}
    one = _search_response(page, lambda: page.locator('#tag-filters .tag-filter[data-label="striped"] button').click())
    assert one["request"]["filters"] == {"tags": ["blue"]}
    none = _search_response(page, lambda: page.locator('#tag-filters .tag-filter[data-label="blue"] button').click())
    assert "filters" not in none["request"] and page.locator("#tag-filters").is_hidden()
    assert len(none["data"]["results"]) > 3 and "tag=" not in page.url

    page.evaluate(FORM_FIELDS)  # a file search sends the labels as form fields
    page.locator("button.tag", has_text="striped").first.click()
    expect(page.locator('#status[data-state="done"]')).to_be_visible()
    upload = _search_response(page, lambda: page.set_input_files("#file-input", str(server["root"] / "red.jpg")))
    assert "tags" in page.evaluate("window.__forms.at(-1)")
    assert sorted(r["name"] for r in upload["data"]["results"]) == ["green.png", "purple.gif", "red.jpg"]
    assert page.evaluate("window.__csp || []") == []
