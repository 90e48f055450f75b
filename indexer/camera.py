"""Camera formats, told apart by content (never by name): HEIC/HEIF through pillow-heif and AVIF through
Pillow's own plugin (ISO-BMFF files, by their ``ftyp`` brands), and camera RAW (DNG, CR2, NEF, ARW: TIFF
files with a raw mosaic) through LibRaw (rawpy). pillow-heif and rawpy are imported only when a file needs
them, so commands that decode no such image never load them. indexer/images.py bounds what they decode."""
from __future__ import annotations

import functools
import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from PIL import Image, TiffImagePlugin, features

from .decoded import DecodeError

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_GENERIC_BRANDS = {b"mif1", b"msf1", b"miaf"}  # either codec: the compatible brands tell
_TIFF = (b"II*\x00", b"MM\x00*")
_MAKE, _SUBIFDS, _SUBFILE, _PHOTOMETRIC, _SAMPLES, _DNG_VERSION = 271, 330, 254, 262, 277, 50706
_LINEAR_RAW = 34892
# LibRaw's flip (applied by its own output) as the EXIF orientation that means the same turn
ORIENTATION = {3: 3, 5: 8, 6: 6}


class NotRaw(DecodeError):
    """LibRaw does not take this file as a camera RAW at all."""


def container_format(data: bytes) -> str | None:
    """"HEIF" or "AVIF" (the Pillow plugin to open it with) for an ISO-BMFF still image, None otherwise."""
    if data[4:8] != b"ftyp":
        return None
    major, box = data[8:12], int.from_bytes(data[:4], "big")
    brands = {major} | {data[i:i + 4] for i in range(16, min(box, len(data), 4096) - 3, 4)}
    if major in _AVIF_BRANDS or (major not in _HEIF_BRANDS and brands & _AVIF_BRANDS):
        if not features.check_module("avif"):
            raise DecodeError("AVIF needs Pillow built with AVIF support (Pillow >= 11.3 wheels)")
        return "AVIF"
    if brands & (_HEIF_BRANDS | _GENERIC_BRANDS):
        _register_heif()
        return "HEIF"
    return None


@functools.cache
def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:
        raise DecodeError("HEIC/HEIF needs the pillow-heif package") from None
    # the primary image only: thumbnails, depth maps and auxiliary images are never decoded
    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


@dataclass(frozen=True)
class RawFile:
    mime: str
    exif: Image.Exif  # IFD 0 (camera, time), read without decoding anything
    mosaic: bool  # a colour-filter mosaic (LibRaw: 2 bytes a sensor pixel, halved), not a linear DNG (8, whole)
    certain: bool  # a DNG or CR2 by its own marks; NEF/ARW are told by maker, and a plain TIFF may share it


def raw_file(data: bytes) -> RawFile | None:
    """What a TIFF-structured camera RAW is, None for anything else (a plain TIFF goes to Pillow)."""
    if data[:4] not in _TIFF:
        return None
    exif = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possibly corrupt EXIF data": the decoder will say
            exif.load(data)
            make = str(exif.get(_MAKE) or "").strip("\x00 ").upper()
            dng = _DNG_VERSION in exif
            subifds = _SUBIFDS in exif
    except (ValueError, TypeError, OSError, SyntaxError, KeyError, IndexError, AttributeError):
        return None
    if data[8:10] == b"CR":
        return RawFile("image/x-canon-cr2", exif, True, True)
    if dng:
        return RawFile("image/x-adobe-dng", exif, _mosaic_dng(data, exif), True)
    if subifds and make.startswith("NIKON"):
        return RawFile("image/x-nikon-nef", exif, True, False)
    if subifds and make.startswith("SONY"):
        return RawFile("image/x-sony-arw", exif, True, False)
    return None


def _mosaic_dng(data: bytes, exif: Image.Exif) -> bool:
    """Whether the DNG's main image (IFD 0 or a sub-IFD, NewSubFileType 0) is a colour mosaic; not when it
    is linear RGB, nor when its sub-IFDs cannot be read (the larger reckoning; LibRaw will say what is wrong)."""
    ifds = [exif]
    offsets = exif.get(_SUBIFDS) or ()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for offset in (offsets if isinstance(offsets, tuple) else (offsets,))[:8]:
                ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
                handle = io.BytesIO(data)
                handle.seek(int(offset))
                ifd.load(handle)
                ifds.append(ifd)
            main = [ifd for ifd in ifds if int(ifd.get(_SUBFILE, 0) or 0) == 0]
            mosaic = bool(main) and all(ifd.get(_PHOTOMETRIC) != _LINEAR_RAW and int(ifd.get(_SAMPLES, 1) or 1) == 1
                                        for ifd in main)
    except (ValueError, TypeError, OSError, SyntaxError, KeyError, IndexError, AttributeError):
        return False
    return mosaic


@contextmanager
def opened(data: bytes) -> Iterator["object"]:
    """rawpy's RawPy for the bytes (metadata parsed, nothing unpacked); LibRaw's errors become DecodeError."""
    try:
        import rawpy
    except ImportError:
        raise DecodeError("camera RAW needs the rawpy package") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            yield raw
    except rawpy.LibRawFileUnsupportedError:
        raise NotRaw("not a camera RAW file LibRaw can read") from None
    except rawpy.LibRawError as exc:
        raise DecodeError(f"cannot decode camera RAW: {_reason(exc)}") from None


def preview(raw) -> bytes | None:
    """The embedded JPEG preview (the largest), None when there is none LibRaw can extract."""
    import rawpy
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None  # any other LibRaw error leaves the object spent: opened() reports it
    if getattr(thumb.format, "name", "") == "JPEG" and isinstance(thumb.data, bytes) and thumb.data[:2] == b"\xff\xd8":
        return thumb.data
    return None


def is_mosaic(raw) -> bool:
    """Whether LibRaw unpacked a one-sample mosaic (unpacking the sensor's data to know)."""
    return getattr(raw.raw_type, "name", "") == "Flat"


def half_size(raw):
    """LibRaw's half-size demosaic (each 2x2 mosaic cell one pixel), camera white balance, 8-bit sRGB,
    its orientation applied: a (height, width, 3) uint8 array."""
    return raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)


def _reason(exc: BaseException) -> str:
    message = exc.args[0] if exc.args else type(exc).__name__
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return text.splitlines()[0] if text.strip() else type(exc).__name__
