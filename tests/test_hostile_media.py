"""Hostile media (issue 11): playlists that make FFmpeg read other files, and small files that decode
to huge buffers. Every refusal must come before the harm: no other file opened, no big buffer made."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageFile

from mmsearch.errors import MMSearchError
from mmsearch.indexer import sounds
from mmsearch.indexer.decode import DecodeError, decode_audio, decode_image, probe_audio
from mmsearch.library import Library
from mmsearch.settings import SETTINGS

from .media import tone_wav

BIG = 10**9  # a max_pixels that never gets in the way


# --- sounds: only our containers, only the file itself --------------------------------------------

def playlist(kind: str, target: str) -> bytes:
    """A small text file that asks FFmpeg to read ``target`` instead of itself."""
    if kind == "ffconcat":
        return f"ffconcat version 1.0\nfile {target}\n".encode()
    if kind == "hls":
        return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n".encode()
    if kind == "dash":
        return (f'<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
                f'mediaPresentationDuration="PT1S" minBufferTime="PT1S"><Period><AdaptationSet mimeType="audio/wav">'
                f'<Representation id="a" bandwidth="256000"><BaseURL>{target}</BaseURL></Representation>'
                f'</AdaptationSet></Period></MPD>').encode()
    raise AssertionError(kind)


@pytest.fixture
def real_sound(tmp_path, monkeypatch) -> Path:
    """A sound beside the working directory, as samples/sounds/a440.wav was beside the server's."""
    path = tmp_path / "secret.wav"
    tone_wav(path, 440.0, 1.0)
    monkeypatch.chdir(tmp_path)
    return path


def test_plain_ffmpeg_would_follow_the_concat_file(real_sound):
    """The threat itself: without our options FFmpeg reads the named file, so the tests below can fail."""
    with av.open(io.BytesIO(playlist("ffconcat", real_sound.name))) as container:
        assert container.format.name == "concat"
        assert next(container.decode(audio=0)).samples > 0


def refusal(call) -> str:
    with pytest.raises(DecodeError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("kind", ["ffconcat", "hls", "dash"])
def test_playlists_are_refused_alike_whether_or_not_the_named_file_exists(kind, real_sound, tmp_path):
    missing = tmp_path / "missing.wav"
    seen = set()
    for target in (str(real_sound), str(missing), real_sound.name, "file:" + str(real_sound), str(tmp_path)):
        data = playlist(kind, target)
        listed = tmp_path / f"listed-{len(seen)}.wav"  # named like a sound: the name must not matter
        listed.write_bytes(data)
        seen |= {refusal(lambda: probe_audio(data)), refusal(lambda: decode_audio(data, 16000, 10)),
                 refusal(lambda: probe_audio(str(listed))), refusal(lambda: decode_audio(str(listed), 16000, 10))}
    assert len(seen) == 1, seen
    assert seen == {refusal(lambda: probe_audio(b"plain text, not a sound at all" * 20))}


def test_the_same_refusal_for_every_unreadable_sound(tmp_path):
    image = io.BytesIO()
    Image.new("RGB", (16, 16)).save(image, "PNG")
    sequence = tmp_path / "frame%d.wav"  # image2 would read frame1.wav, frame2.wav... by the pattern
    sequence.write_bytes(image.getvalue())
    (tmp_path / "frame1.wav").write_bytes(image.getvalue())
    reasons = {refusal(lambda: probe_audio(image.getvalue())), refusal(lambda: probe_audio(str(sequence))),
               refusal(lambda: probe_audio(np.random.default_rng(1).bytes(5000))),
               refusal(lambda: probe_audio(playlist("ffconcat", "/etc/passwd")))}
    assert len(reasons) == 1, reasons


def test_the_protocol_fence_holds_even_for_a_demuxer_that_opens_files(monkeypatch, real_sound):
    """Second fence, tested on its own: with concat let through, the named file still cannot be opened."""
    monkeypatch.setattr(sounds, "FORMATS", sounds.FORMATS + ("concat",))
    with pytest.raises(DecodeError):
        decode_audio(playlist("ffconcat", real_sound.name), 16000, 10)


def test_the_container_is_chosen_by_content_not_by_name(tmp_path, real_sound):
    renamed = tmp_path / "tone.mp3"
    renamed.write_bytes(real_sound.read_bytes())
    assert probe_audio(str(renamed)).meta["mime"] == "audio/wav"
    looks_like_list = tmp_path / "tone.m3u8"
    looks_like_list.write_bytes(real_sound.read_bytes())
    assert decode_audio(str(looks_like_list), 16000, 10).wave.size == 16000


def test_a_playlist_query_gets_one_refusal(settings, real_sound, tmp_path):
    library = Library(settings)
    messages = set()
    for target in (real_sound.name, "missing.wav"):
        with pytest.raises(MMSearchError) as caught:
            library.embed_query("audio", playlist("ffconcat", target))
        messages.add(str(caught.value))
    assert len(messages) == 1, messages


def test_indexed_playlists_fail_alike_and_read_nothing(settings, real_sound, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "follows.wav").write_bytes(playlist("ffconcat", real_sound.name))
    (root / "dangling.wav").write_bytes(playlist("ffconcat", "missing.wav"))
    (root / "relative.mkv").write_bytes(playlist("ffconcat", "../secret.wav"))
    (root / "stream.mp4").write_bytes(playlist("hls", real_sound.name))
    report = Library(settings).run_index([root])
    failures = dict(report.failures)
    assert report.added == 0 and set(failures) == {str(p) for p in root.iterdir()}
    assert len(set(failures.values())) == 1, failures


# --- images: a memory budget in bytes ------------------------------------------------------------

def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (no pixel data to speak of)."""
    body = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", body) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def no_pixels(monkeypatch):
    def refuse(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_sixteen_bit_greyscale_counts_two_bytes_a_pixel(no_pixels):
    data = png_header(10000, 10000, bit_depth=16)
    assert len(data) < 200 and Image.open(io.BytesIO(data)).mode == "I;16"
    with pytest.raises(DecodeError, match="10000x10000") as caught:
        decode_image(data, max_pixels=100_000_000)  # within the pixel cap: the bytes refuse it
    assert "MiB" in str(caught.value)


def test_the_budget_counts_mode_and_bit_depth():
    """Same pixel count, same budget: one byte a pixel fits, two or four bytes do not."""
    size = (600, 400)
    budget = 600 * 400 * 8

    def png(mode):
        out = io.BytesIO()
        Image.new(mode, size).save(out, "PNG")
        return out.getvalue()
    assert decode_image(png("L"), BIG, max_bytes=budget).image.size == size
    for mode in ("I;16", "RGBA"):
        with pytest.raises(DecodeError, match="MiB"):
            decode_image(png(mode), BIG, max_bytes=budget)
    assert decode_image(png("RGBA"), BIG, max_bytes=budget * 4).image.size == size


@pytest.mark.parametrize("size", [(100000, 1), (1, 100000), (30000, 100)])
def test_extreme_aspect_ratios_are_refused_before_decoding(size, no_pixels):
    data = png_header(*size, bit_depth=1)
    with pytest.raises(DecodeError, match="aspect"):
        decode_image(data, BIG)


def test_ordinary_long_images_still_decode():
    out = io.BytesIO()
    Image.new("RGB", (2000, 100), (10, 20, 30)).save(out, "PNG")
    assert decode_image(out.getvalue(), BIG).image.size == (2000, 100)


def test_a_query_image_over_the_budget_is_refused_before_decoding(settings, no_pixels):
    with pytest.raises(MMSearchError, match="MiB"):
        Library(settings).embed_query("image", png_header(10000, 10000, bit_depth=16))


def test_settings_defaults_are_the_decoders_defaults():
    from mmsearch.indexer import images
    defaults = {s.name: s.default for s in SETTINGS}
    assert defaults["max_image_bytes"] == images.MAX_BYTES
    assert defaults["max_image_aspect"] == images.MAX_ASPECT
