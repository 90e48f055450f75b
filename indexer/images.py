"""Images through Pillow under a memory budget in bytes, reckoned from the header before any pixel exists.

The reckoning counts the decoder's buffer (mode and bit depth: 1 byte a pixel for L or P, 2 for 16-bit
greyscale, 4 for RGB, RGBA, CMYK, 32-bit or float; twice that where the decoder keeps a frame of its
own) and every copy made on the way to RGB (orientation, transparency flattened onto white, 16-bit or
float tones stretched to 8 bits). A caller that names the model's input side lets an image far above
it be decoded reduced: JPEG scaled in the decoder (``Image.draft``), so the full buffer never exists;
other formats decoded, then box-reduced (``Image.reduce``) before any conversion. The shortest side
always stays at least FIDELITY_GAP times the model's side, so what the model sees barely changes
(tests/test_hostile_media.py holds the measured cosine). Smaller images are decoded exactly.

HEIC/HEIF and AVIF (indexer/camera.py) take this same path: their size is in the header, their decoders
keep planes of their own (_FRAMES). Camera RAW: the embedded JPEG preview, decoded as a JPEG here, when it
is as large as the decode would keep; else LibRaw's half-size demosaic, reckoned from the sensor's size
before anything is unpacked (_demosaic)."""
from __future__ import annotations

import datetime as dt
import io
import math
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import camera
from .decoded import Decoded, DecodeError, reason

# Pillow guards against bombs itself; we refuse earlier, at our own limits, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # the only Pillow plugins a file may reach (JPEG: MPO too)
MAX_BYTES = 192 * 2**20  # the settings' defaults (max_image_bytes, max_image_aspect)
MAX_ASPECT = 50
FIDELITY_GAP = 4
_STORED = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # Pillow's bytes a pixel, else 4
# the decoder's own buffers, in Pillow images: libtiff's RGBA raster, libwebp's canvas, GIF's disposal frame,
# libheif's and libavif's YUV planes and RGB copy (measured, bytes a pixel: 12 MP HEIF 8.1, 10-bit HEIF 8.6, AVIF 9.4)
_FRAMES = {"TIFF": 2, "WEBP": 2, "GIF": 2, "HEIF": 2, "AVIF": 3}
_STRETCHED = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_REDUCES = {"L", "LA", "La", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_ALPHA = {"RGBA", "LA", "PA", "La", "RGBa"}
# bytes a pixel of the copies after decoding and reducing: the orientation turn, then to RGB
_WORK = {"RGB": 4, "L": 5, "1": 5, "P": 17, "I": 9, "F": 9, **{m: 7 for m in ("I;16", "I;16L", "I;16B", "I;16N")},
         **{m: 20 for m in _ALPHA}}
# LibRaw's half-size demosaic, bytes an output pixel: its 4-channel 16-bit image, its 8-bit RGB, Pillow's copy
_HALF_SIZE = 8 + 3 + 4 + 1  # and 1 for LibRaw's own: 134 MiB measured for a 24 MP sensor, 137 reckoned
_BAND_PIXELS = 1 << 20
_EXIF_DATETIME_ORIGINAL, _EXIF_DATETIME, _EXIF_IFD, _EXIF_ORIENTATION = 0x9003, 0x0132, 0x8769, 0x0112
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}


def model_input_side(encoder: Any) -> int:
    """The side open_clip's preprocess resizes to (its first transform with a size), 0 if none is known."""
    for transform in getattr(getattr(encoder, "preprocess_image", None), "transforms", None) or ():
        size = getattr(transform, "size", None) or getattr(transform, "max_size", None)
        if isinstance(size, int):
            return size
        if isinstance(size, (tuple, list)) and size and all(isinstance(s, int) for s in size):
            return max(size)
    return 0


def decode_image(data: bytes, max_pixels: int, max_bytes: int = MAX_BYTES, model_side: int = 0,
                 max_aspect: float = MAX_ASPECT) -> Decoded:
    """RGB image with EXIF orientation applied and transparency flattened onto white; ``model_side``
    (the model's input side, 0: exact) allows a reduced decode of images far larger than it."""
    raw = camera.raw_file(data)
    if raw is not None:
        try:
            return _decode_raw(data, raw, max_pixels, max_bytes, model_side, max_aspect)
        except camera.NotRaw:
            if raw.certain:
                raise  # a NEF or ARW guess LibRaw refuses may still be a plain TIFF
    formats = (fmt,) if (fmt := camera.container_format(data)) else FORMATS
    return _decode(data, formats, max_pixels, max_bytes, model_side, max_aspect)


def _decode(data: bytes, formats: tuple[str, ...], max_pixels: int, max_bytes: int, model_side: int,
            max_aspect: float, orientation: int = 1) -> Decoded:
    """decode_image through the named Pillow plugins; ``orientation``: the turn when the file names none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
            width, height = image.size
            _check_shape(width, height, max_pixels, max_aspect)
            scale, factor = _plan(image, max_bytes, model_side)
            if scale > 1:
                image.draft(image.mode, (width // scale, height // scale))
            image.load()
            taken_at = _exif_time(image)
            mime = image.get_format_mimetype() if hasattr(image, "get_format_mimetype") else None
            turn = _TURNS.get(_orientation(image, orientation))
            if factor > 1:
                image = _reducible(image).reduce(factor)
            if turn is not None:
                image = image.transpose(turn)
            image = _to_rgb(image)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"cannot decode image: {reason(exc)}") from None
    if turn in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270):
        width, height = height, width
    meta = {"mime": mime, "width": width, "height": height, "taken_at": taken_at}  # the file's own size
    return Decoded(meta=meta, image=image)


def _decode_raw(data: bytes, raw: camera.RawFile, max_pixels: int, max_bytes: int, model_side: int,
                max_aspect: float) -> Decoded:
    """A camera RAW: its JPEG preview when that is as large as the decode would keep, else a half-size demosaic."""
    with camera.opened(data) as handle:
        sizes = handle.sizes
        width, height = sizes.width, sizes.height
        _check_shape(width, height, max_pixels, max_aspect)
        if sizes.raw_width * sizes.raw_height > max_pixels:
            raise DecodeError(f"image too large: {sizes.raw_width}x{sizes.raw_height} sensor exceeds {max_pixels} "
                              f"pixels (possible decompression bomb)")
        orientation = camera.ORIENTATION.get(sizes.flip, 1)
        keep = FIDELITY_GAP * model_side
        demosaiced = min(width, height) // (2 if raw.mosaic else 1)  # the short side _demosaic gives
        enough = min(keep, demosaiced) if keep else demosaiced
        image, jpeg = None, camera.preview(handle)
        if jpeg is not None:
            try:
                shown = _decode(jpeg, ("JPEG",), max_pixels, max_bytes, model_side, max_aspect, orientation)
                image = shown.image if min(shown.meta["width"], shown.meta["height"]) >= enough else None
            except DecodeError:
                pass  # a broken or oversized preview: the sensor's own pixels
        if image is None:
            image = _demosaic(handle, raw.mosaic, width, height, max_bytes, keep)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(meta={"mime": raw.mime, "width": width, "height": height, "taken_at": _exif_time(raw.exif)},
                   image=image)


def _demosaic(handle, mosaic: bool, width: int, height: int, max_bytes: int, keep: int) -> Image.Image:
    """LibRaw's half-size demosaic (a linear DNG: its whole size), box-reduced like other formats, refused
    before unpacking when the sensor's buffer, the demosaic's and the copies after exceed the budget. A file
    taken for a mosaic that unpacks otherwise (a Canon sRAW) is reckoned again, whole, before demosaicing."""
    shrink = 2 if mosaic else 1
    out_w, out_h = -(-width // shrink), -(-height // shrink)
    factor = min(out_w, out_h) // keep if keep and min(out_w, out_h) >= 2 * keep else 1
    kept = -(-out_w // factor) * -(-out_h // factor) if factor > 1 else 0
    sizes = handle.sizes
    need = sizes.raw_width * sizes.raw_height * (2 if mosaic else 8) + out_w * out_h * _HALF_SIZE + kept * 4
    if need > max_bytes:
        raise DecodeError(f"image too large to decode: {width}x{height} camera RAW needs ~{_mib(need)} MiB, "
                          f"over the {_mib(max_bytes)} MiB budget (max_image_bytes)")
    if mosaic and not camera.is_mosaic(handle):
        return _demosaic(handle, False, width, height, max_bytes, keep)
    rgb = camera.half_size(handle)
    image = Image.fromarray(rgb)
    del rgb
    return image.reduce(factor) if factor > 1 else image


def _check_shape(width: int, height: int, max_pixels: int, max_aspect: float) -> None:
    if width * height > max_pixels:
        raise DecodeError(f"image too large: {width}x{height} exceeds {max_pixels} pixels "
                          f"(possible decompression bomb)")
    if min(width, height) < 1 or max(width, height) > max_aspect * min(width, height):
        raise DecodeError(f"image shape refused: {width}x{height} has an aspect ratio over {max_aspect:g}:1 "
                          f"(max_image_aspect)")


def _plan(image: Image.Image, max_bytes: int, model_side: int) -> tuple[int, int]:
    """(JPEG draft scale, reduce factor) for this header, or DecodeError when even those exceed the budget.

    With a model side: the most reduction that keeps the shortest side >= FIDELITY_GAP x it (none for
    images below twice that). Without: exact, unless only a JPEG draft scale fits the budget."""
    width, height = image.size
    keep = FIDELITY_GAP * model_side
    draftable = image.format in ("JPEG", "MPO") and len(image.tile) == 1
    options = []
    for scale in (1, 2, 4, 8) if draftable else (1,):
        w, h = -(-width // scale), -(-height // scale)
        if scale > 1 and keep and min(w, h) < keep:
            break
        factor = min(w, h) // keep if keep and min(w, h) >= 2 * keep else 1
        options.append((scale, factor, _cost(image, w * h, -(-w // factor) * -(-h // factor), factor > 1)))
    fitting = [o for o in options if o[2] <= max_bytes]
    if not fitting:
        need = options[-1][2] if keep else options[0][2]
        raise DecodeError(f"image too large to decode: {width}x{height} {image.mode} needs ~{_mib(need)} MiB, "
                          f"over the {_mib(max_bytes)} MiB budget (max_image_bytes)")
    scale, factor, _ = fitting[-1] if keep else fitting[0]
    return scale, factor


def _cost(image: Image.Image, decoded: int, kept: int, reducing: bool) -> int:
    """Bytes alive at once, at most: the decoder's buffer, a pre-reduce conversion, the copies after."""
    mode = image.mode
    cost = decoded * _STORED.get(mode, 4) * _FRAMES.get(image.format, 1)
    if reducing and mode not in _REDUCES:
        mode = "L" if mode in _STRETCHED or mode == "1" else "RGBA"
        cost += decoded * _STORED.get(mode, 4)
    return cost + kept * _WORK.get(mode, 8)


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def _reducible(image: Image.Image) -> Image.Image:
    """The image in a mode Image.reduce takes, 8-bit: what _to_rgb would do first anyway."""
    if image.mode in _STRETCHED:
        return _stretch_to_8bit(image)
    if image.mode == "1":
        return image.convert("L")
    if image.mode not in _REDUCES:
        alpha = image.mode in _ALPHA or "transparency" in image.info
        return image.convert("RGBA" if alpha else "RGB")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        del image
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _STRETCHED:
        image = _stretch_to_8bit(image)  # 16-bit or float greyscale would clip to white
    return image.convert("RGB") if image.mode != "RGB" else image


def _bands(image: Image.Image):
    """Row bands of about a megapixel each, as float64 arrays: no full-size array ever exists."""
    width, height = image.size
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        yield top, np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=np.float64)


def _stretch_to_8bit(image: Image.Image) -> Image.Image:
    """The tones' range (NaN ignored) stretched onto 0..255."""
    low, high = math.inf, -math.inf
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band has no minimum
        for _, values in _bands(image):
            band_low, band_high = float(np.nanmin(values)), float(np.nanmax(values))
            low, high = min(low, band_low) if band_low == band_low else low, \
                max(high, band_high) if band_high == band_high else high
        scale = 255.0 / (high - low) if high > low else 0.0
        out = Image.new("L", image.size)
        for top, values in _bands(image):
            out.paste(Image.fromarray(np.nan_to_num((values - low) * scale).astype(np.uint8)), (0, top))
    return out


def _orientation(image: Image.Image, default: int = 1) -> int:
    """The file's EXIF orientation; ``default`` (a camera RAW's own) when it names none or no turn."""
    try:
        value = int(image.getexif().get(_EXIF_ORIENTATION) or 1)
    except (ValueError, TypeError, OSError, AttributeError, SyntaxError):
        value = 1
    return default if value == 1 else value


def _exif_time(source: Image.Image | Image.Exif) -> dt.datetime | None:
    try:
        exif = source if isinstance(source, Image.Exif) else source.getexif()
        value = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL) or exif.get(_EXIF_DATETIME)
        return dt.datetime.strptime(str(value).strip("\x00 "), "%Y:%m:%d %H:%M:%S") if value else None
    except (ValueError, TypeError, OSError, AttributeError):
        return None
