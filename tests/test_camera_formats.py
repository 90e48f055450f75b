"""Phone and camera formats (issue 13): HEIC/HEIF through pillow-heif, AVIF through Pillow's own plugin,
camera RAW (DNG, CR2, NEF, ARW) through LibRaw: the embedded JPEG preview, else a half-size demosaic.
The files are made here: HEIC and AVIF by their encoders, DNGs as hand-built TIFFs that LibRaw reads."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys

import numpy as np
import pillow_heif
import pytest
import rawpy
from PIL import Image, ImageDraw, ImageFilter

from mmsearch.indexer import camera
from mmsearch.indexer.decode import DecodeError, decode_image
from mmsearch.library import Library
from mmsearch.modalities import modality_of

BIG = 10**9
SIZE = (384, 256)
# sRGB (D65) to XYZ: its inverse as the DNG's ColorMatrix1 makes the test camera's RGB linear sRGB
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def picture(size=SIZE) -> Image.Image:
    """Smooth (lossy encoders keep it): a two-colour gradient, soft discs, a dark bar on the left half."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([40 + 190 * x, 60 + 150 * y, 200 - 120 * x * y], -1)
    image = Image.fromarray(rgb.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((w * 0.55, h * 0.2, w * 0.85, h * 0.7), fill=(250, 220, 40))
    draw.rectangle((w * 0.05, h * 0.1, w * 0.15, h * 0.9), fill=(20, 20, 30))
    return image.filter(ImageFilter.GaussianBlur(2))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    if fmt == "HEIF":
        pillow_heif.from_pillow(image).save(out, quality=90, **options)
    else:
        image.save(out, fmt, **options)
    return out.getvalue()


# --- a DNG, built by hand -------------------------------------------------------------------------------
_PACK = {1: "B", 2: "B", 3: "H", 4: "I", 5: "I", 7: "B", 10: "i"}
_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 10: 8}


def tiff(ifds: list[tuple[dict, bytes]], byte_order: str = "<") -> bytes:
    """A TIFF of IFDs given as ({tag: (type, values)}, strip): each strip's offset and length fill tags
    273 and 279; the first IFD's SubIFDs (330) point at all the others. Strips first, IFDs after them."""
    def ifd(entries: dict, at: int) -> bytes:
        head, tail = struct.pack(byte_order + "H", len(entries)), b""
        after = at + 2 + 12 * len(entries) + 4
        for tag in sorted(entries):
            kind, values = entries[tag]
            raw = values.encode() + b"\0" if isinstance(values, str) else \
                struct.pack(byte_order + _PACK[kind] * len(values), *values)
            if len(raw) <= 4:
                head += struct.pack(byte_order + "HHI", tag, kind, len(raw) // _UNIT[kind]) + raw.ljust(4, b"\0")
            else:
                head += struct.pack(byte_order + "HHII", tag, kind, len(raw) // _UNIT[kind], after + len(tail))
                tail += raw + b"\0" * (len(raw) % 2)
        return head + b"\0\0\0\0" + tail
    out = bytearray((b"II*\0" if byte_order == "<" else b"MM\0*") + b"\0" * 4)
    full = []
    for entries, strip in ifds:
        full.append({**entries, 273: (4, (len(out),)), 279: (4, (len(strip),))})
        out += strip + b"\0" * (len(strip) % 2)
    if len(full) > 1:
        full[0][330] = (4, (0,) * (len(full) - 1))  # the right size now, the offsets once laid out
    offsets, at = [], len(out)
    for entries in full:
        offsets.append(at)
        at += len(ifd(entries, at))
    if len(full) > 1:
        full[0][330] = (4, tuple(offsets[1:]))
    struct.pack_into(byte_order + "I", out, 4, offsets[0])
    for entries, at in zip(full, offsets):
        out += ifd(entries, at)
    return bytes(out)


def mosaic(image: Image.Image) -> bytes:
    """The picture as a 12-bit RGGB Bayer mosaic of linear light, 16-bit little-endian samples."""
    linear = (np.asarray(image, np.float64) / 255) ** 2.2 * 4095
    cfa = np.empty(linear.shape[:2], "<u2")
    cfa[0::2, 0::2], cfa[0::2, 1::2] = linear[0::2, 0::2, 0], linear[0::2, 1::2, 1]
    cfa[1::2, 0::2], cfa[1::2, 1::2] = linear[1::2, 0::2, 1], linear[1::2, 1::2, 2]
    return cfa.tobytes()


def dng(image: Image.Image, preview: Image.Image | None = None, orientation: int = 1,
        taken: str = "2021:06:05 04:03:02", linear: bool = False) -> bytes:
    """A DNG 1.4 of the picture: its raw mosaic in IFD 0, or, with a preview, the preview as a baseline
    JPEG in IFD 0 (NewSubFileType 1) and the mosaic in a sub-IFD, as cameras and converters write it.
    ``linear``: a linear DNG instead (three 16-bit samples a pixel, already demosaiced)."""
    w, h = image.size
    cam = np.linalg.inv(SRGB_TO_XYZ).ravel()
    tags = {50706: (1, (1, 4, 0, 0)), 50708: (2, "mmsearch test camera"), 271: (2, "mmsearch"), 272: (2, "test"),
            274: (3, (orientation,)), 306: (2, taken), 50717: (4, (4095,)), 50778: (3, (21,)),
            50721: (10, tuple(v for c in cam for v in (round(c * 10000), 10000))), 50728: (5, (1, 1, 1, 1, 1, 1))}
    raw = {254: (4, (0,)), 256: (4, (w,)), 257: (4, (h,)), 258: (3, (16,)), 259: (3, (1,)), 262: (3, (32803,)),
           277: (3, (1,)), 278: (4, (h,)), 284: (3, (1,)), 33421: (3, (2, 2)), 33422: (1, (0, 1, 1, 2)),
           50717: (4, (4095,))}
    if linear:
        raw.update({258: (3, (16, 16, 16)), 262: (3, (34892,)), 277: (3, (3,)), 50717: (4, (4095,) * 3)})
        del raw[33421], raw[33422]
        pixels = ((np.asarray(image, np.float64) / 255) ** 2.2 * 4095).astype("<u2").tobytes()
        return tiff([({**raw, **tags}, pixels)])
    if preview is None:
        return tiff([({**raw, **tags}, mosaic(image))])
    jpeg = encoded(preview, "JPEG", quality=95)
    pw, ph = preview.size
    first = {254: (4, (1,)), 256: (4, (pw,)), 257: (4, (ph,)), 258: (3, (8, 8, 8)), 259: (3, (7,)),
             262: (3, (6,)), 277: (3, (3,)), 278: (4, (ph,)), 284: (3, (1,))}
    return tiff([({**first, **tags}, jpeg), (raw, mosaic(image))])


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    image = picture()
    return {"png": encoded(image, "PNG"), "heic": encoded(image, "HEIF"), "avif": encoded(image, "AVIF", quality=90),
            "dng": dng(image, preview=image), "raw.dng": dng(image), "linear.dng": dng(image, linear=True)}


def test_libraw_itself_reads_the_test_dngs(files):
    with rawpy.imread(io.BytesIO(files["dng"])) as raw:
        assert (raw.sizes.width, raw.sizes.height) == SIZE and raw.num_colors == 3
        thumb = raw.extract_thumb()
        assert thumb.format == rawpy.ThumbFormat.JPEG and thumb.data[:2] == b"\xff\xd8"
    with rawpy.imread(io.BytesIO(files["raw.dng"])) as raw:
        with pytest.raises(rawpy.LibRawNoThumbnailError):
            raw.extract_thumb()
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    assert rgb.shape == (SIZE[1] // 2, SIZE[0] // 2, 3)
    # the demosaic is the picture: the dark bar, the yellow disc
    assert rgb[64, 19].max() < 60 and rgb[56, 134, 0] > 200 and rgb[56, 134, 2] < 120


def test_formats_are_told_by_content(files):
    assert camera.container_format(files["heic"]) == "HEIF" and camera.container_format(files["avif"]) == "AVIF"
    assert camera.container_format(files["png"]) is None and camera.raw_file(files["png"]) is None
    assert camera.raw_file(files["dng"]).mime == camera.raw_file(files["raw.dng"]).mime == "image/x-adobe-dng"
    assert camera.raw_file(files["raw.dng"]).mosaic and not camera.raw_file(files["linear.dng"]).mosaic
    assert camera.raw_file(encoded(picture(), "TIFF")) is None  # a plain TIFF stays Pillow's
    for name in ("a.HEIC", "a.heif", "a.avif", "a.dng", "a.CR2", "a.nef", "a.arw"):
        assert modality_of(name) == "image"


@pytest.mark.parametrize("name, mime, decoded_size", [
    ("heic", "image/heic", SIZE), ("avif", "image/avif", SIZE), ("dng", "image/x-adobe-dng", SIZE),
    ("raw.dng", "image/x-adobe-dng", (SIZE[0] // 2, SIZE[1] // 2)),  # no preview: the half-size demosaic
    ("linear.dng", "image/x-adobe-dng", SIZE)])  # nothing to demosaic: LibRaw's output is whole
def test_each_format_decodes_to_the_picture(files, name, mime, decoded_size):
    decoded = decode_image(files[name], BIG)
    assert decoded.meta["mime"] == mime and (decoded.meta["width"], decoded.meta["height"]) == SIZE
    assert decoded.image.mode == "RGB" and decoded.image.size == decoded_size
    reference = np.asarray(picture().resize(decoded_size, Image.Resampling.BOX), np.float64)
    assert np.abs(np.asarray(decoded.image, np.float64) - reference).mean() < (6 if name in ("heic", "avif", "dng")
                                                                               else 25)
    if name in ("dng", "raw.dng"):
        assert decoded.meta["taken_at"].isoformat() == "2021-06-05T04:03:02"


def test_a_dngs_orientation_turns_preview_and_demosaic_alike():
    image = picture()
    for data in (dng(image, preview=image, orientation=6), dng(image, orientation=6)):
        decoded = decode_image(data, BIG)
        assert (decoded.meta["width"], decoded.meta["height"]) == (SIZE[1], SIZE[0])
        w, h = decoded.image.size
        assert h > w  # turned 90° clockwise: the dark bar on the left is now along the top
        assert np.asarray(decoded.image)[: h // 10, w // 2].mean() < 80


def test_an_avifs_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encoded(picture(), "AVIF", quality=90, exif=exif), BIG)
    assert decoded.image.size == (SIZE[1], SIZE[0]) and (decoded.meta["width"], decoded.meta["height"]) == \
        (SIZE[1], SIZE[0])


@pytest.fixture(scope="module")
def indexed(files, tmp_path_factory):
    from mmsearch.settings import load_settings
    root = tmp_path_factory.mktemp("camera") / "media"
    root.mkdir()
    names = {"photo.png": "png", "photo.heic": "heic", "photo.avif": "avif", "photo.dng": "dng",
             "sensor.dng": "raw.dng"}
    for name, key in names.items():
        (root / name).write_bytes(files[key])
    data_dir = root.parent / "data"
    library = Library(load_settings({"data_dir": str(data_dir), "model": "tiny", "batch_size": 4}, env={}))
    report = library.run_index([root])
    return library, root, report


def test_a_heic_an_avif_and_a_dng_index_as_images(indexed):
    library, root, report = indexed
    assert report.added == 5 and not report.failures
    for name in ("photo.heic", "photo.avif", "photo.dng", "sensor.dng"):
        [item_id] = library.store.ids_under(str(root / name))
        item = library.store.get_item(item_id)
        assert item.modality == "image" and item.status == "ok", (name, item.status, item.error)
        assert (item.width, item.height) == SIZE
        assert library.store.item_vector(item_id).shape == (64,)


# Measured with the tiny model: cosine to the PNG's vector 0.99999 (HEIC, DNG preview), 0.99998 (AVIF),
# 0.998 (the half-size demosaic: LibRaw's own tone curve and brightening); the picture mirrored: 0.9906,
# so each must also be nearer the PNG than that by half.
@pytest.mark.parametrize("name", ["photo.heic", "photo.avif", "photo.dng", "sensor.dng"])
def test_each_formats_vector_is_the_pngs(indexed, name):
    library, root, _ = indexed
    vectors = [library.store.item_vector(library.store.ids_under(str(root / n))[0]) for n in ("photo.png", name)]
    vectors.append(library.embed_query("image", encoded(picture().transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                                        "PNG"))[0])
    png, other, mirrored = (v / np.linalg.norm(v) for v in vectors)
    same, mirror = float(png @ other), float(png @ mirrored)
    assert same >= 0.99 and 1 - same < 0.5 * (1 - mirror), (same, mirror)


def test_start_up_without_images_imports_neither_decoder():
    """Decoding a PNG (any command that never meets a camera format) loads neither pillow-heif nor rawpy."""
    code = ("import io, sys; from PIL import Image; from mmsearch.indexer.decode import decode_image\n"
            "out = io.BytesIO(); Image.new('RGB', (8, 8)).save(out, 'PNG'); decode_image(out.getvalue(), 10**6)\n"
            "print([m for m in ('pillow_heif', 'rawpy') if m in sys.modules])")
    assert json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                      .stdout.replace("'", '"')) == []


# --- hostile and oversized files -----------------------------------------------------------------------
def broken(files) -> dict[str, bytes]:
    return {"heic cut": files["heic"][:len(files["heic"]) // 2], "heic tail cut": files["heic"][:-40],
            "heic header, garbage": files["heic"][:32] + bytes(range(256)) * 8,
            "avif cut": files["avif"][:len(files["avif"]) // 2], "avif tail cut": files["avif"][:-40],
            "dng cut": files["dng"][:len(files["dng"]) // 2], "raw dng cut": files["raw.dng"][:-2000],
            "dng header only": files["dng"][:8] + b"\0" * 40,
            "cr2 header, garbage": b"II*\0\x10\0\0\0CR\x02\0" + bytes(range(256)) * 4,
            "dng, strip past the end": _strip_past_the_end(files["raw.dng"]),
            "dng, broken preview": _broken_preview(files["dng"])}


def _strip_past_the_end(data: bytes) -> bytes:
    out = bytearray(data)
    at = struct.unpack_from("<I", out, 4)[0]
    for i in range(struct.unpack_from("<H", out, at)[0]):
        if struct.unpack_from("<H", out, at + 2 + 12 * i)[0] == 273:
            struct.pack_into("<I", out, at + 2 + 12 * i + 8, len(out) + 10**7)
    return bytes(out)


def _broken_preview(data: bytes) -> bytes:
    """The preview JPEG's frame header says 0 rows: LibRaw still extracts it, the decoder refuses it."""
    sof = data.index(b"\xff\xc0")
    return data[:sof + 5] + b"\0\0" + data[sof + 7:]


def test_broken_files_fail_with_one_line(files):
    outcomes = {}
    for name, data in broken(files).items():
        try:
            decoded = decode_image(data, BIG)
        except DecodeError as exc:
            outcomes[name] = str(exc)
        else:
            outcomes[name] = decoded
    assert outcomes.pop("dng, broken preview").image.size == (SIZE[0] // 2, SIZE[1] // 2)  # the sensor's instead
    for name, reason in outcomes.items():
        assert isinstance(reason, str) and reason and "\n" not in reason, (name, reason)


def test_broken_files_index_as_failures(files, settings, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    cases = {"cut.heic": files["heic"][:300], "cut.avif": files["avif"][:300], "cut.dng": files["dng"][:500],
             "junk.cr2": b"II*\0\x10\0\0\0CR\x02\0" + b"\x55" * 500, "junk.nef": b"\x00" * 600,
             "junk.arw": b"MM\0*" + b"\x01" * 600}
    for name, data in cases.items():
        (root / name).write_bytes(data)
    report = Library(settings).run_index([root])
    failures = dict(report.failures)
    assert report.added == 0 and set(failures) == {str(root / n) for n in cases}
    assert all(reason and "\n" not in reason and "unexpected" not in reason for reason in failures.values()), failures


def test_sizes_are_checked_before_anything_is_decoded(files, monkeypatch):
    def never(*_):
        raise AssertionError("decoded past the limits")
    monkeypatch.setattr(camera, "half_size", never)
    monkeypatch.setattr(camera, "is_mosaic", never)  # which unpacks the sensor's data
    image = picture()
    with pytest.raises(DecodeError, match="budget"):  # the demosaic reckoned from the sensor's size
        decode_image(files["raw.dng"], BIG, max_bytes=500_000)
    with pytest.raises(DecodeError, match="too large"):
        decode_image(files["raw.dng"], 50_000)
    huge = dng(image).replace(struct.pack("<HHII", 256, 4, 1, SIZE[0]), struct.pack("<HHII", 256, 4, 1, 60000)) \
                     .replace(struct.pack("<HHII", 257, 4, 1, SIZE[1]), struct.pack("<HHII", 257, 4, 1, 40000))
    with pytest.raises(DecodeError, match="too large"):  # a header that claims 2.4 gigapixels
        decode_image(huge, 100_000_000)
    with pytest.raises(DecodeError, match="aspect"):
        decode_image(dng(Image.new("RGB", (2600, 50))), BIG)
    for key in ("heic", "avif"):  # known from the header: refused before libheif or libavif decode
        with pytest.raises(DecodeError, match="budget"):
            decode_image(files[key], BIG, max_bytes=500_000)
        with pytest.raises(DecodeError, match="too large"):
            decode_image(files[key], 50_000)


def test_a_linear_dng_is_reckoned_whole(files, monkeypatch):
    """LibRaw keeps a linear DNG's 3 samples a pixel in 8 bytes and does not halve it: 4x the mosaic's cost,
    reckoned from its tags, or, for a file taken for a mosaic (a Canon sRAW), once LibRaw has unpacked it."""
    budget = 1_000_000  # the mosaic's demosaic needs ~0.6 MB here, the linear DNG's ~2.4 MB
    assert decode_image(files["raw.dng"], BIG, max_bytes=budget).image.size == (SIZE[0] // 2, SIZE[1] // 2)
    with pytest.raises(DecodeError, match="budget"):
        decode_image(files["linear.dng"], BIG, max_bytes=budget)
    monkeypatch.setattr(camera, "_mosaic_dng", lambda data, exif: True)
    assert camera.raw_file(files["linear.dng"]).mosaic
    with pytest.raises(DecodeError, match="budget"):
        decode_image(files["linear.dng"], BIG, max_bytes=budget)
    assert decode_image(files["linear.dng"], BIG, max_bytes=3_000_000).image.size == SIZE


def test_a_large_heic_is_reduced_for_the_model():
    data = encoded(Image.new("RGB", (1280, 960), (200, 40, 40)), "HEIF")
    decoded = decode_image(data, BIG, model_side=64)
    assert decoded.image.size == (427, 320) and (decoded.meta["width"], decoded.meta["height"]) == (1280, 960)
    assert np.abs(np.asarray(decoded.image, np.int16) - (200, 40, 40)).max() < 12


def test_a_plain_tiff_with_a_camera_makers_name_stays_a_tiff():
    """NEF and ARW are told by maker and sub-IFDs; a TIFF that has both but no raw mosaic is Pillow's."""
    image = picture((640, 480))
    rgb = {254: (4, (0,)), 256: (4, (640,)), 257: (4, (480,)), 258: (3, (8, 8, 8)), 259: (3, (1,)),
           262: (3, (2,)), 277: (3, (3,)), 278: (4, (480,)), 284: (3, (1,))}
    for make in ("NIKON CORPORATION", "SONY"):
        data = tiff([({**rgb, 271: (2, make)}, image.tobytes()), (rgb, image.tobytes())])
        assert not camera.raw_file(data).certain
        decoded = decode_image(data, BIG)
        assert decoded.meta["mime"] == "image/tiff" and np.array_equal(np.asarray(decoded.image), np.asarray(image))
