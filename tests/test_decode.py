"""indexer.decode: images, text and audio into content plus metadata, or a DecodeError with a reason."""
from __future__ import annotations

import datetime as dt
import io
import struct
import wave
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mmsearch.indexer.decode import DecodeError, content_hash, decode, decode_audio, decode_image, decode_text, probe_audio

from .media import codec as encoder, encode

BIG = 10_000_000  # a max_pixels that never gets in the way


def encoded(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def close(pixel, expected, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected))


# --- images: orientation and metadata ---------------------------------------------------------------

def halves(size=(40, 20)):
    """Left half red, right half blue: shows which way the picture was turned."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


@pytest.mark.parametrize("orientation, top, bottom", [
    (6, (255, 0, 0), (0, 0, 255)),  # turn 90° clockwise to view: the left edge becomes the top
    (8, (0, 0, 255), (255, 0, 0)),  # turn 90° anticlockwise: the right edge becomes the top
])
def test_exif_orientation_is_applied(orientation, top, bottom):
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encoded(halves(), "JPEG", exif=exif, quality=95), BIG)
    assert decoded.image.size == (20, 40)
    assert (decoded.meta["width"], decoded.meta["height"]) == (20, 40)
    assert close(decoded.image.getpixel((10, 3)), top, 40)
    assert close(decoded.image.getpixel((10, 36)), bottom, 40)


def test_no_orientation_keeps_size():
    decoded = decode_image(encoded(halves(), "JPEG"), BIG)
    assert decoded.image.size == (40, 20)
    assert decoded.meta["taken_at"] is None


def test_exif_datetime_original_becomes_taken_at():
    exif = Image.Exif()
    exif[0x0132] = "2001:01:01 00:00:00"  # DateTime (file change time): less precise, must lose
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 12:34:56"  # DateTimeOriginal
    decoded = decode_image(encoded(halves(), "JPEG", exif=exif), BIG)
    assert decoded.meta["taken_at"] == dt.datetime(2021, 7, 4, 12, 34, 56)


def test_exif_datetime_used_when_no_original():
    exif = Image.Exif()
    exif[0x0132] = "2019:12:31 23:59:58"
    decoded = decode_image(encoded(halves(), "JPEG", exif=exif), BIG)
    assert decoded.meta["taken_at"] == dt.datetime(2019, 12, 31, 23, 59, 58)


def test_malformed_exif_date_is_ignored_not_fatal():
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "not a date"
    decoded = decode_image(encoded(halves(), "JPEG", exif=exif), BIG)
    assert decoded.meta["taken_at"] is None
    assert decoded.image.size == (40, 20)


# --- images: colour modes ---------------------------------------------------------------------------

def test_rgba_transparency_is_flattened_onto_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # transparent black
    image.putpixel((0, 0), (0, 0, 255, 255))  # opaque blue
    image.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    decoded = decode_image(encoded(image, "PNG"), BIG)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((3, 3)) == (255, 255, 255)
    assert decoded.image.getpixel((0, 0)) == (0, 0, 255)
    assert all(100 <= v <= 155 for v in decoded.image.getpixel((1, 0)))


def test_la_transparency_is_flattened_onto_white():
    image = Image.new("LA", (3, 3), (0, 0))
    image.putpixel((0, 0), (50, 255))
    decoded = decode_image(encoded(image, "PNG"), BIG)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((2, 2)) == (255, 255, 255)
    assert decoded.image.getpixel((0, 0)) == (50, 50, 50)


def test_palette_png_transparency_is_flattened_onto_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])  # index 0 black (transparent), index 1 red
    image.putpixel((0, 0), 1)
    data = encoded(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    decoded = decode_image(data, BIG)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((2, 2)) == (255, 255, 255)
    assert decoded.image.getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_greyscale_keeps_its_tones():
    image = Image.new("I;16", (3, 1))
    image.putdata([0, 30000, 65535])
    data = encoded(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode_image(data, BIG)
    assert decoded.image.mode == "RGB"
    black, grey, white = (decoded.image.getpixel((x, 0)) for x in range(3))
    assert black == (0, 0, 0)
    assert grey[0] == grey[1] == grey[2] and 100 <= grey[0] <= 135  # 30000/65535 of full scale
    assert all(v >= 250 for v in white)


def test_cmyk_jpeg_becomes_rgb():
    image = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # red in CMYK
    data = encoded(image, "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = decode_image(data, BIG)
    assert decoded.image.mode == "RGB"
    assert close(decoded.image.getpixel((5, 5)), (255, 0, 0), 20)
    assert decoded.meta["mime"] == "image/jpeg"


def test_greyscale_and_bilevel_become_rgb():
    for mode, colour, expected in [("L", 77, (77, 77, 77)), ("1", 1, (255, 255, 255))]:
        decoded = decode_image(encoded(Image.new(mode, (5, 4), colour), "PNG"), BIG)
        assert decoded.image.mode == "RGB"
        assert decoded.image.getpixel((2, 2)) == expected


# --- images: formats --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, mime, kwargs", [
    ("JPEG", "image/jpeg", {"quality": 95}),
    ("PNG", "image/png", {}),
    ("WEBP", "image/webp", {"quality": 95}),
    ("GIF", "image/gif", {}),
    ("BMP", "image/bmp", {}),
    ("TIFF", "image/tiff", {}),
])
def test_formats_decode_with_size_and_mime(fmt, mime, kwargs):
    data = encoded(Image.new("RGB", (31, 17), (0, 0, 255)), fmt, **kwargs)
    decoded = decode_image(data, BIG)
    assert decoded.meta["mime"] == mime
    assert (decoded.meta["width"], decoded.meta["height"]) == (31, 17)
    assert decoded.image.size == (31, 17)
    assert decoded.image.mode == "RGB"
    assert close(decoded.image.getpixel((15, 8)), (0, 0, 255))


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (12, 9), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    decoded = decode_image(buffer.getvalue(), BIG)
    assert decoded.meta["mime"] == "image/gif"
    assert decoded.image.size == (12, 9)
    assert decoded.image.getpixel((6, 4)) == (255, 0, 0)


# --- images: refusals -------------------------------------------------------------------------------

def test_image_over_the_pixel_limit_is_refused():
    data = encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(DecodeError, match="100x100"):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=10_000).image.size == (100, 100)  # the limit itself is allowed


def huge_png_header(width, height):
    """A tiny PNG whose header claims width x height bilevel pixels."""
    small = encoded(Image.new("1", (1, 1)), "PNG")
    length, kind = struct.unpack(">I4s", small[8:16])
    assert kind == b"IHDR"
    body = struct.pack(">II", width, height) + small[24:16 + length]
    chunk = struct.pack(">I", length) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return small[:8] + chunk + small[8 + 12 + length:]


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    data = huge_png_header(30000, 30000)
    assert len(data) < 200
    assert Image.open(io.BytesIO(data)).size == (30000, 30000)

    def no_pixels(self):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)  # the refusal must come from the header alone
    with pytest.raises(DecodeError, match="30000x30000") as caught:
        decode_image(data, max_pixels=50_000_000)
    assert "large" in str(caught.value) or "bomb" in str(caught.value)


def test_truncated_jpeg_is_a_decode_error():
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    data = encoded(noise, "JPEG")
    for cut in (len(data) // 3, len(data) // 2, 100, 10):
        with pytest.raises(DecodeError):
            decode_image(data[:cut], BIG)


def test_text_bytes_as_image_is_a_decode_error():
    with pytest.raises(DecodeError) as caught:
        decode_image(b"this is text pretending to be a png, not an image at all", BIG)
    assert str(caught.value)


@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_empty_data_is_a_decode_error(modality):
    with pytest.raises(DecodeError) as caught:
        decode(modality, b"", f"empty.{modality}", BIG, 1000)
    assert str(caught.value)


def test_decode_dispatches_on_modality():
    image = decode("image", encoded(Image.new("RGB", (7, 5)), "PNG"), "x.png", BIG, 1000)
    assert image.image.size == (7, 5) and image.text is None
    text = decode("text", b"hello there", "x.txt", BIG, 1000)
    assert text.text == "hello there" and text.image is None
    with pytest.raises(DecodeError):
        decode("video", b"data", "x.mkv", BIG, 1000)


# --- text -------------------------------------------------------------------------------------------

FRENCH = ("Le café crème et la crème brûlée sont délicieux; à côté, un gâteau très léger. "
          "Où est la fenêtre? Voilà, déjà l'été, et nous mangeons des crêpes à la française.")


def test_utf8_text():
    decoded = decode_text(FRENCH.encode("utf-8"), 10_000)
    assert decoded.text == FRENCH
    assert decoded.meta["mime"] == "text/plain"
    assert decoded.meta["encoding"].replace("_", "-").lower() == "utf-8"


def test_utf8_with_bom_drops_the_bom():
    decoded = decode_text(b"\xef\xbb\xbf" + FRENCH.encode("utf-8"), 10_000)
    assert decoded.text == FRENCH
    assert not decoded.text.startswith("\ufeff")


@pytest.mark.parametrize("text", [
    FRENCH,
    "café crème brûlée, une crêpe à la française et un thé glacé très sucré pour le goûter. " * 2,
    "Der Bär läuft über die Straße und ißt Käse. Schöne Grüße aus München, Köln und Düsseldorf!",
], ids=["french", "french-repeated", "german"])
def test_latin1_text_with_accents(text):
    data = text.encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # really needs detection
    decoded = decode_text(data, 10_000)
    assert decoded.text == text.strip()
    assert decoded.meta["mime"] == "text/plain"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(codec):
    text = "Привет, как дела? Это тест. " + FRENCH
    data = text.encode(codec)
    if codec != "utf-16":
        data = "\ufeff".encode(codec) + data
    decoded = decode_text(data, 10_000)
    assert decoded.text == text
    assert "16" in decoded.meta["encoding"]


def test_binary_junk_is_refused():
    rng = np.random.default_rng(0)
    junk = rng.bytes(4096)
    assert b"\x00" in junk
    with pytest.raises(DecodeError):
        decode_text(junk, 10_000)


def test_nul_bytes_in_otherwise_plain_text_are_refused():
    with pytest.raises(DecodeError):
        decode_text(b"ELF\x00\x01\x02 header and some readable strings", 10_000)


@pytest.mark.parametrize("data", [b"", b"   \n\t  \r\n", b"\xef\xbb\xbf  \n", " \n ".encode("utf-16")])
def test_empty_or_whitespace_text_is_refused(data):
    with pytest.raises(DecodeError):
        decode_text(data, 10_000)


def test_text_is_stripped_and_truncated_to_max_chars():
    body = "".join(chr(ord("a") + i % 26) for i in range(500))
    decoded = decode_text(("\n\n  " + body + "  \n").encode(), 100)
    assert decoded.text == body[:100]
    assert decode_text(body.encode(), 10_000).text == body


def test_truncation_counts_characters_not_bytes():
    body = "é" * 50
    assert decode_text(body.encode("utf-8"), 10).text == "é" * 10


# --- audio ------------------------------------------------------------------------------------------

def sine(container, codec, rate, channels=1, seconds=1.0, options=None):
    """A 440 Hz sine of ``seconds`` seconds, encoded by PyAV."""
    wave_ = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
    return encode(container, codec, rate, wave_, channels, options)


def make_audio(kind, rate, channels=1):
    if kind == "wav":
        return sine("wav", "pcm_s16le", rate, channels)
    if kind == "flac":
        return sine("flac", encoder("flac"), rate, channels)
    if kind == "ogg":
        name = encoder("libvorbis", "vorbis")
        if name == "vorbis":  # FFmpeg's own Vorbis encoder is experimental and stereo-only
            return sine("ogg", name, rate, 2, options={"strict": "experimental"})
        return sine("ogg", name, rate, channels)
    if kind == "mp3":
        return sine("mp3", encoder("libmp3lame", "mp3"), rate, channels)
    if kind == "m4a":
        return sine("ipod", encoder("aac", "libfdk_aac"), rate, channels)
    if kind == "opus":
        return sine("ogg", encoder("libopus", "opus"), 48000, channels,
                    options={"strict": "experimental"} if encoder("libopus", "opus") == "opus" else None)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, rate, mime", [
    ("wav", 16000, "audio/wav"),
    ("wav", 48000, "audio/wav"),
    ("flac", 16000, "audio/flac"),
    ("ogg", 48000, "audio/ogg"),
    ("mp3", 16000, "audio/mpeg"),
    ("mp3", 48000, "audio/mpeg"),
    ("m4a", 48000, "audio/mp4"),
    ("m4a", 16000, "audio/mp4"),
    ("opus", 48000, "audio/ogg"),
])
def test_probe_audio(kind, rate, mime):
    data = make_audio(kind, rate)
    decoded = probe_audio(data)
    meta = decoded.meta
    assert meta["duration"] == pytest.approx(1.0, abs=0.1)
    assert meta["sample_rate"] == rate
    expected_channels = 2 if kind == "ogg" and encoder("libvorbis", "vorbis") == "vorbis" else 1
    assert meta["channels"] == expected_channels
    assert meta["mime"] == mime
    assert decoded.image is None and decoded.text is None


def test_probe_stereo_audio_counts_channels():
    meta = probe_audio(sine("wav", "pcm_s16le", 16000, channels=2, seconds=0.5)).meta
    assert meta["channels"] == 2
    assert meta["duration"] == pytest.approx(0.5, abs=0.05)


def test_decode_audio_goes_through_probe():
    meta = decode("audio", make_audio("wav", 16000), "tone.wav", BIG, 1000).meta
    assert meta["sample_rate"] == 16000


def test_wav_with_header_only_fails_with_a_reason():
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
    assert len(buffer.getvalue()) > 0
    with pytest.raises(DecodeError) as caught:
        decode("audio", buffer.getvalue(), "empty.wav", BIG, 1000)
    assert str(caught.value)


def test_noise_named_flac_fails_with_a_reason():
    noise = np.random.default_rng(3).bytes(20_000)
    with pytest.raises(DecodeError) as caught:
        decode("audio", noise, "noise.flac", BIG, 1000)
    assert str(caught.value)


@pytest.mark.parametrize("kind", ["mp3", "flac", "m4a", "ogg", "wav"])
def test_truncated_audio_fails_cleanly_or_probes(kind):
    data = make_audio(kind, 48000 if kind in ("ogg", "m4a") else 16000)
    for cut in (10, 100, len(data) // 4, len(data) // 2, len(data) - 7):
        try:
            meta = probe_audio(data[:cut]).meta
        except DecodeError as exc:
            assert str(exc)  # a reason to store
        else:
            assert meta["sample_rate"] > 0 and meta["channels"] > 0


@pytest.mark.parametrize("kind", ["wav", "mp3"])
def test_a_cut_off_sound_stores_the_length_that_decodes(kind):
    """An MP3's Xing header still claims the whole length after the file is cut in half."""
    data = make_audio(kind, 16000)
    full = decode_audio(data, 16000, 600).meta["duration"]
    cut = decode_audio(data[:len(data) // 2], 16000, 600).meta["duration"]
    assert 0.4 * full < cut < 0.6 * full, (full, cut)
    capped = decode_audio(data, 16000, 0.5)  # capped: the header's length stands, not the half second decoded
    assert capped.meta["duration"] == pytest.approx(full, rel=0.05) and len(capped.wave) == 8000


def test_image_bytes_are_not_audio():
    with pytest.raises(DecodeError):
        probe_audio(encoded(Image.new("RGB", (8, 8)), "PNG"))


# --- content hash -----------------------------------------------------------------------------------

def test_content_hash_equal_for_equal_bytes_and_differs_otherwise():
    data = b"some media bytes" * 100
    assert content_hash(data) == content_hash(bytes(bytearray(data)))
    assert content_hash(data) != content_hash(data + b"!")
    assert content_hash(data) != content_hash(data[:-1] + b"X")
    assert content_hash(b"") != content_hash(b"\x00")
    assert isinstance(content_hash(data), str)
