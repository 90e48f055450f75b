"""LABELS.txt and LABELS.csv as a person writes them, refused in one line that says what is wrong and where:
the resolved path of an entry that is not indexed, a first row that is neither the header path,label nor an
item's, a file of one label however often it is repeated; and the default set name from the file's name
follows the one rule for set names (tagging.NAME)."""
from __future__ import annotations

import pytest

from mmsearch.cli.tagging import _default_name
from mmsearch.errors import MMSearchError
from mmsearch.labels import read_label_list, read_labelled
from mmsearch.tagging import check_name


@pytest.fixture
def indexed(tmp_path) -> dict[str, int]:
    """Stored absolute path -> item id, as store.index_rows() gives them (the files need not exist)."""
    return {str(tmp_path / "photos" / f"{name}.jpg"): n for n, name in enumerate(("cat", "dog", "owl"), start=1)}


def _csv(tmp_path, text: str) -> str:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return str(path)


def test_an_entry_that_is_not_indexed_is_named_with_its_resolved_path(tmp_path, indexed):
    path = _csv(tmp_path, "path,label\nphotos/cat.jpg,cat\nphotos/../photos/emu.jpg,bird\n")
    with pytest.raises(MMSearchError) as refused:
        read_labelled(path, indexed)
    assert str(refused.value) == (f"{path} line 3: photos/../photos/emu.jpg is not an indexed item "
                                  f"({tmp_path / 'photos' / 'emu.jpg'})")


@pytest.mark.parametrize("header", ["file,label", "path,labels", "label,path", "Path,Class"])
def test_a_first_row_that_is_neither_the_header_nor_an_item_is_a_bad_header(tmp_path, indexed, header):
    path = _csv(tmp_path, f"{header}\nphotos/cat.jpg,cat\nphotos/dog.jpg,dog\n")
    with pytest.raises(MMSearchError) as refused:
        read_labelled(path, indexed)
    message = str(refused.value)
    assert message.startswith(f"{path} line 1: {header!r} is neither the header path,label nor a row of an "
                              "indexed item") and message.endswith("a header, if any, must be exactly path,label")
    assert str(tmp_path / header.split(",")[0]) in message  # where its first cell would be


@pytest.mark.parametrize("text", ["path,label\nphotos/cat.jpg,cat\nphotos/dog.jpg,dog\n",
                                  " PATH , Label \nphotos/cat.jpg,cat\nphotos/dog.jpg,dog\n",
                                  "\npath,label\nphotos/cat.jpg,cat\nphotos/dog.jpg,dog\n",  # after a blank line
                                  "photos/cat.jpg,cat\nphotos/dog.jpg,dog\n"])  # no header
def test_the_header_path_label_is_optional(tmp_path, indexed, text):
    labelled = read_labelled(_csv(tmp_path, text), indexed)
    assert labelled.ids.tolist() == [1, 2] and labelled.labels == ["cat", "dog"]


def test_an_unindexed_entry_after_the_first_row_is_not_called_a_header(tmp_path, indexed):
    path = _csv(tmp_path, "photos/cat.jpg,cat\nfile,label\n")
    with pytest.raises(MMSearchError, match=r"line 2: file is not an indexed item \(") as refused:
        read_labelled(path, indexed)
    assert "header" not in str(refused.value)


def test_a_label_file_of_one_repeated_label_names_it_and_its_lines(tmp_path, indexed):
    labels_txt = tmp_path / "labels.txt"
    labels_txt.write_text("# colours\nred\n\nred\n")
    with pytest.raises(MMSearchError) as refused:
        read_label_list(str(labels_txt))
    assert str(refused.value) == (f"{labels_txt}: zero-shot tagging needs at least two different labels, one per "
                                  "line; found only 'red', on lines 2, 4 (a label given again counts once)")
    path = _csv(tmp_path, "path,label\n" + "".join(f"photos/{n}.jpg,pet\n" for n in ("cat", "dog", "owl") * 3))
    with pytest.raises(MMSearchError) as refused:
        read_labelled(path, indexed)
    assert str(refused.value) == (f"{path}: need items of at least two different labels; found only 'pet', on "
                                  "lines 2, 3, 4, 5, 6, … 4 more (a label given again counts once)")
    empty = _csv(tmp_path, "path,label\n")
    with pytest.raises(MMSearchError, match="at least two different labels; found no labels$"):
        read_labelled(empty, indexed)


@pytest.mark.parametrize("stem, valid", [("colours", True), ("my.set_2-b", True), ("_hidden", False),
                                         ("café", False), ("a" * 64, True), ("a" * 65, False), ("two words", False)])
def test_the_default_set_name_follows_the_set_name_rule(tmp_path, stem, valid):
    path = str(tmp_path / f"{stem}.txt")
    assert _default_name(path, "zero-shot") == (stem if valid else "zero-shot")
    check_name(_default_name(path, "zero-shot"))  # whatever it picks is a name a set can have
    assert _default_name("-", "classifier") == "classifier"  # stdin has no name
