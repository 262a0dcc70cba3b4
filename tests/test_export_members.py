"""Archive members read and copied from their offsets (``vario.export.members``): the same
bytes as ``zipfile`` gives, damage refused, compressed members through ``zipfile``; archives
read ahead up to a window."""

from __future__ import annotations

import os
import zipfile

import pytest

from vario.export.members import ArchiveMembers, MemberError, ReadAhead


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "job.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rgb/00000.png", os.urandom(70_000))
        z.writestr(zipfile.ZipInfo("labels/coco.json"), b'{"images": []}' * 500)
        z.writestr("depth/00000.png", b"x" * 5_000, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_every_member_reads_and_copies_as_zipfile_gives_it(archive, tmp_path):
    with zipfile.ZipFile(archive) as z, ArchiveMembers(archive) as members:
        for info in z.infolist():
            expected = z.read(info)
            assert members.read(info.filename) == expected
            target = tmp_path / "copy.bin"
            assert members.copy_to(info.filename, target) == len(expected)
            assert target.read_bytes() == expected
            assert members.size(info.filename) == len(expected)
            buffer = bytearray(len(expected) + 2)  # read into the middle of a larger one
            members.read_into(info.filename, memoryview(buffer)[1:-1])
            assert buffer[1:-1] == expected and buffer[0] == buffer[-1] == 0
            with pytest.raises(ValueError, match="bytes, not"):
                members.read_into(info.filename, memoryview(buffer))


def test_a_damaged_stored_member_is_refused_on_read(archive):
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("rgb/00000.png")
        data = z.read(info)
    raw = bytearray(archive.read_bytes())
    at = raw.index(data[:64])
    raw[at + 100] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with ArchiveMembers(archive) as members:
        with pytest.raises(MemberError, match="CRC-32"):
            members.read("rgb/00000.png")
        with pytest.raises(MemberError, match="CRC-32"):
            members.read_into("rgb/00000.png", memoryview(bytearray(len(data))))


def test_a_member_whose_local_header_is_not_there_is_refused(archive, tmp_path):
    with zipfile.ZipFile(archive) as z:
        offset = z.getinfo("rgb/00000.png").header_offset
    raw = bytearray(archive.read_bytes())
    raw[offset : offset + 4] = b"XXXX"
    archive.write_bytes(bytes(raw))
    with ArchiveMembers(archive) as members:
        with pytest.raises(MemberError, match="local header"):
            members.read("rgb/00000.png")
        with pytest.raises(MemberError, match="local header"):
            members.copy_to("rgb/00000.png", tmp_path / "out.png")
        assert not (tmp_path / "out.png").exists()


def test_a_member_not_in_the_archive_is_a_key_error(archive):
    with ArchiveMembers(archive) as members, pytest.raises(KeyError):
        members.read("rgb/99999.png")


def test_the_archive_is_opened_on_the_first_member_only_and_closed_after(archive):
    members = ArchiveMembers(archive)
    assert members._zip is None  # a format that only copies never opens it here
    members.read("rgb/00000.png")
    members.close()
    assert members._zip is None and members._fd == -1


def test_archives_are_read_ahead_of_the_one_in_hand_up_to_the_window(tmp_path):
    paths = []
    for n in range(8):
        paths.append(tmp_path / f"{n}.zip")
        paths[-1].write_bytes(b"x" * 100)
    paths[5] = tmp_path / "missing.zip"  # its reader reports it; read ahead, it counts 0
    ahead = ReadAhead(paths, window=250)
    ahead.at(0)
    assert ahead.sizes == [100] * 4  # the one in hand, then 3 after it: 300 >= 250
    ahead.at(1)
    assert len(ahead.sizes) == 5 and ahead.ahead == 300
    ahead.at(4)
    assert ahead.sizes == [100] * 5 + [0, 100, 100]  # to the end: every one asked for once
    ahead.at(7)
    assert ahead.ahead == 0
