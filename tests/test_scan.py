"""indexer.scan: walking folders, naming modalities, pairing caption sidecars."""
from __future__ import annotations

import os

import pytest

from mmsearch.indexer.scan import FileEntry, absolute_roots, scan, under
from mmsearch.modalities import modality_of


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(result, root):
    return sorted(os.path.relpath(p, root) for p in result.files)


# --- modality_of ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, modality", [
    ("a.jpg", "image"), ("a.JPEG", "image"), ("a.png", "image"), ("a.webp", "image"), ("a.gif", "image"),
    ("a.bmp", "image"), ("a.tif", "image"), ("a.TIFF", "image"),
    ("a.wav", "audio"), ("a.flac", "audio"), ("a.ogg", "audio"), ("a.mp3", "audio"), ("a.M4A", "audio"),
    ("a.opus", "audio"),
    ("a.txt", "text"), ("a.md", "text"),
    ("a.exe", None), ("a.jpg.bak", None), ("README", None), ("a.pdf", None), ("jpg", None),
])
def test_modality_of(name, modality):
    assert modality_of(name) == modality
    assert modality_of(os.path.join("/some dir.jpg", name)) == modality


# --- walking ----------------------------------------------------------------------------------------

def test_recursive_walk_with_entries(tmp_path):
    touch(tmp_path / "a.jpg", b"12345")
    touch(tmp_path / "one" / "b.png")
    touch(tmp_path / "one" / "two" / "three" / "c.wav")
    touch(tmp_path / "one" / "two" / "note.md")
    result = scan([tmp_path])
    assert names(result, tmp_path) == ["a.jpg", "one/b.png", "one/two/note.md", "one/two/three/c.wav"]
    entry = result.files[str(tmp_path / "a.jpg")]
    assert isinstance(entry, FileEntry)
    assert entry.path == str(tmp_path / "a.jpg")
    assert entry.modality == "image"
    assert entry.size == 5
    assert entry.mtime_ns == os.stat(tmp_path / "a.jpg").st_mtime_ns
    assert entry.caption_path is None
    assert result.files[str(tmp_path / "one" / "two" / "three" / "c.wav")].modality == "audio"
    assert result.files[str(tmp_path / "one" / "two" / "note.md")].modality == "text"
    assert result.errors == []
    assert result.captions == {}


def test_keys_are_absolute_even_for_relative_roots(tmp_path, monkeypatch):
    touch(tmp_path / "media" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    result = scan(["media"])
    assert list(result.files) == [str(tmp_path / "media" / "a.jpg")]


def test_hidden_files_and_folders_are_skipped(tmp_path):
    touch(tmp_path / "seen.jpg")
    touch(tmp_path / ".secret.jpg")
    touch(tmp_path / ".hidden" / "inside.png")
    touch(tmp_path / "sub" / ".also hidden" / "deep.wav")
    touch(tmp_path / "sub" / ".note.txt")
    touch(tmp_path / "sub" / "visible.txt", b"hello")
    assert names(scan([tmp_path]), tmp_path) == ["seen.jpg", "sub/visible.txt"]


def test_hidden_caption_is_not_a_caption(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / ".a.txt")
    result = scan([tmp_path])
    assert result.files[str(tmp_path / "a.jpg")].caption_path is None


def test_unknown_extensions_are_ignored(tmp_path):
    for name in ("doc.pdf", "movie.flv", "archive.zip", "noext", "photo.jpg.part", "script.py"):
        touch(tmp_path / name)
    touch(tmp_path / "keep.png")
    assert names(scan([tmp_path]), tmp_path) == ["keep.png"]


def test_upper_case_extensions_are_found(tmp_path):
    touch(tmp_path / "A.JPG")
    touch(tmp_path / "B.Mp3")
    result = scan([tmp_path])
    assert result.files[str(tmp_path / "A.JPG")].modality == "image"
    assert result.files[str(tmp_path / "B.Mp3")].modality == "audio"


def test_unicode_and_space_names(tmp_path):
    touch(tmp_path / "sub dir" / "café au lait.jpg")
    touch(tmp_path / "日本語" / "写真 1.png")
    touch(tmp_path / "sub dir" / "café au lait.txt", "une tasse".encode())
    touch(tmp_path / "emoji 🎵.flac")
    result = scan([tmp_path])
    photo = str(tmp_path / "sub dir" / "café au lait.jpg")
    assert set(result.files) == {photo, str(tmp_path / "日本語" / "写真 1.png"), str(tmp_path / "emoji 🎵.flac")}
    assert result.files[photo].caption_path == str(tmp_path / "sub dir" / "café au lait.txt")


def test_symlink_loop_terminates_without_duplicates(tmp_path):
    root = tmp_path / "root"
    touch(root / "a.jpg")
    touch(root / "sub" / "b.png")
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> root
    result = scan([root])
    assert names(result, root) == ["a.jpg", "sub/b.png"]
    assert result.errors == []


def test_symlink_to_own_folder_terminates(tmp_path):
    touch(tmp_path / "sub" / "b.png")
    os.symlink(tmp_path / "sub", tmp_path / "sub" / "self")  # sub/self -> sub
    result = scan([tmp_path])
    assert names(result, tmp_path) == ["sub/b.png"]
    assert result.errors == []


def test_directory_symlink_outside_the_tree_is_followed(tmp_path):
    touch(tmp_path / "elsewhere" / "far.jpg")
    touch(tmp_path / "root" / "near.jpg")
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "link")
    result = scan([tmp_path / "root"])
    assert names(result, tmp_path / "root") == ["link/far.jpg", "near.jpg"]


def test_overlapping_roots_list_each_file_once(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "sub" / "b.png")
    result = scan([tmp_path, tmp_path / "sub", tmp_path / "sub" / "b.png"])
    assert names(result, tmp_path) == ["a.jpg", "sub/b.png"]


def test_nonexistent_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan([tmp_path / "nowhere"])


def test_empty_folder(tmp_path):
    result = scan([tmp_path])
    assert result.files == {} and result.captions == {} and result.errors == []


# --- sidecars ---------------------------------------------------------------------------------------

def test_caption_sidecar_pairs_with_image(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.txt", b"a red picture")
    result = scan([tmp_path])
    image, caption = str(tmp_path / "a.jpg"), str(tmp_path / "a.txt")
    assert caption not in result.files
    assert list(result.files) == [image]
    assert result.files[image].caption_path == caption
    assert result.captions == {caption: image}


def test_caption_sidecar_pairs_with_audio(tmp_path):
    touch(tmp_path / "song.mp3")
    touch(tmp_path / "song.txt", b"a quiet piano piece")
    result = scan([tmp_path])
    song, caption = str(tmp_path / "song.mp3"), str(tmp_path / "song.txt")
    assert list(result.files) == [song]
    assert result.files[song].caption_path == caption
    assert result.captions == {caption: song}


def test_sidecar_only_pairs_within_its_own_folder(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "other" / "a.txt", b"not about the jpg")
    result = scan([tmp_path])
    assert result.files[str(tmp_path / "a.jpg")].caption_path is None
    assert result.files[str(tmp_path / "other" / "a.txt")].modality == "text"


def test_sidecar_with_upper_case_extension_is_not_lost(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.TXT", b"a caption written on windows")
    result = scan([tmp_path])
    image, sidecar = str(tmp_path / "a.jpg"), str(tmp_path / "a.TXT")
    # either it captions the image or it is a text item of its own; silently dropping it is wrong
    assert result.files[image].caption_path == sidecar or sidecar in result.files


def test_lone_txt_is_a_text_item(tmp_path):
    touch(tmp_path / "notes.txt", b"milk and eggs")
    touch(tmp_path / "photo.jpg")
    result = scan([tmp_path])
    notes = result.files[str(tmp_path / "notes.txt")]
    assert notes.modality == "text"
    assert notes.caption_path is None
    assert result.files[str(tmp_path / "photo.jpg")].caption_path is None
    assert result.captions == {}


def test_md_is_never_a_caption(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.md", b"# a heading")
    result = scan([tmp_path])
    assert result.files[str(tmp_path / "a.jpg")].caption_path is None
    assert result.files[str(tmp_path / "a.md")].modality == "text"
    assert result.captions == {}


def test_text_files_get_no_caption(tmp_path):
    touch(tmp_path / "a.md", b"# a heading")
    touch(tmp_path / "a.txt", b"plain words")
    result = scan([tmp_path])
    assert result.files[str(tmp_path / "a.md")].caption_path is None
    assert result.files[str(tmp_path / "a.txt")].modality == "text"


def test_txt_next_to_unknown_extension_is_a_text_item(tmp_path):
    touch(tmp_path / "a.pdf")
    touch(tmp_path / "a.txt", b"words")
    result = scan([tmp_path])
    assert list(result.files) == [str(tmp_path / "a.txt")]


# --- a single file as root --------------------------------------------------------------------------

def test_single_file_root(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "b.png")
    touch(tmp_path / "sub" / "c.png")
    result = scan([tmp_path / "a.jpg"])
    assert list(result.files) == [str(tmp_path / "a.jpg")]
    assert result.files[str(tmp_path / "a.jpg")].modality == "image"


def test_single_file_root_finds_its_sidecar(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.txt", b"caption")
    result = scan([tmp_path / "a.jpg"])
    image, caption = str(tmp_path / "a.jpg"), str(tmp_path / "a.txt")
    assert list(result.files) == [image]
    assert result.files[image].caption_path == caption
    assert result.captions == {caption: image}


def test_single_text_file_root(tmp_path):
    touch(tmp_path / "notes.txt", b"words")
    result = scan([tmp_path / "notes.txt"])
    assert result.files[str(tmp_path / "notes.txt")].modality == "text"


def test_single_unknown_file_root_gives_nothing(tmp_path):
    touch(tmp_path / "doc.pdf")
    assert scan([tmp_path / "doc.pdf"]).files == {}


# --- under ------------------------------------------------------------------------------------------

def test_under_prefix_semantics():
    assert under("/a/b", ["/a/b"])
    assert under("/a/b/c.jpg", ["/a/b"])
    assert under("/a/b/c/d.jpg", ["/a/b"])
    assert under("/a/b/c.jpg", ["/a/b/"])
    assert not under("/a/bc/d.jpg", ["/a/b"])
    assert not under("/a/bc", ["/a/b"])
    assert not under("/a/b", ["/a/bc"])
    assert not under("/a", ["/a/b"])
    assert not under("/x/y.jpg", [])


def test_under_any_of_several_roots():
    assert under("/x/y.jpg", ["/a", "/x"])
    assert not under("/xy/z.jpg", ["/a", "/x"])
    assert under("/anything/at/all", ["/"])


def test_scanned_files_are_under_their_roots(tmp_path, monkeypatch):
    touch(tmp_path / "media" / "a.jpg")
    touch(tmp_path / "media" / "sub" / "b.png")
    monkeypatch.chdir(tmp_path)
    for given in ["media", str(tmp_path / "media"), "media/", "./media/sub/..", "media/../media"]:
        roots = absolute_roots([given])
        result = scan(roots)
        assert len(result.files) == 2, given
        assert all(under(path, roots) for path in result.files), (given, roots)
