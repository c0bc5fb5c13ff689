"""Images read from zip archives as OSV-5M ships them (images/<split>/NN.zip, <id>.jpg inside)."""

import zipfile

import pytest
import torch

import attn_assets.zip_members as zip_members
from attn_assets.core.image_source import MemberError, close_archives, open_image, read_member
from attn_assets.core.loader import ImageRecord, iter_batches, load_batch
from attn_assets.core.model import make_clip_processor
from attn_assets.core.preprocess import Preprocessor, load_rgb

# A cp437 name zipfile cannot write itself (it stores non-ASCII names as UTF-8 with the flag set):
# an ASCII placeholder of the same length is written, then its bytes are patched to Latin-1 'café'.
PLACEHOLDER, LATIN1_NAME = b"cafX_0003.jpg", b"caf\xe9_0003.jpg"


@pytest.fixture(scope="module")
def preprocess():
    return Preprocessor(make_clip_processor(48))


@pytest.fixture(autouse=True)
def _fresh_archives():
    close_archives()
    yield
    close_archives()


@pytest.fixture
def osv_root(tmp_path, sample_images):
    """images/test/00.zip holding four photos (one under a Latin-1 name), a corrupt member and a non-image."""
    folder = tmp_path / "images" / "test"
    folder.mkdir(parents=True)
    archive = folder / "00.zip"
    photos = [sample_images[n] for n in ("wide_792x512.jpg", "tall_512x792.jpg", "square_300.png")]
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for index, photo in enumerate(photos):
            out.write(photo, f"{index:04d}.jpg")
        out.write(sample_images["wide_792x512.jpg"], PLACEHOLDER.decode())
        out.writestr("0004.jpg", sample_images["panorama_1600x300.jpg"].read_bytes())
        out.writestr("notes.jpg", "this is not an image\n")
    raw = archive.read_bytes()
    assert raw.count(PLACEHOLDER) == 2  # local header and central directory
    raw = raw.replace(PLACEHOLDER, LATIN1_NAME)
    member_4 = zipfile.ZipFile(archive).getinfo("0004.jpg")
    data_at = member_4.header_offset + 30 + len("0004.jpg") + 200  # 200 bytes into the deflated data
    raw = raw[:data_at] + bytes(b ^ 0xFF for b in raw[data_at : data_at + 64]) + raw[data_at + 64 :]
    archive.write_bytes(raw)
    return tmp_path, archive, photos


def test_members_decode_exactly_as_extracted_files(osv_root, preprocess):
    _, archive, photos = osv_root
    records = [ImageRecord(f"{i:04d}", str(archive), f"{i:04d}.jpg") for i in range(len(photos))]
    batch = load_batch(records, preprocess)
    assert batch.image_ids == ["0000", "0001", "0002"] and not batch.failures
    for index, photo in enumerate(photos):
        assert torch.equal(batch.pixel_values[index], preprocess(load_rgb(photo)))
        assert open_image(records[index]).tobytes() == load_rgb(photo).tobytes()
    assert batch.image_sizes[0] == (792, 512)


def test_non_utf8_member_name_is_read(osv_root, preprocess, sample_images):
    _, archive, _ = osv_root
    name = LATIN1_NAME.decode("cp437")  # what zipfile.namelist() gives for a name without the UTF-8 flag
    assert name in zipfile.ZipFile(archive).namelist()
    batch = load_batch([ImageRecord("cafe", str(archive), name)], preprocess)
    assert batch.image_ids == ["cafe"]
    assert torch.equal(batch.pixel_values[0], preprocess(load_rgb(sample_images["wide_792x512.jpg"])))
    name.encode("utf-8")  # storable by every UTF-8 writer


def test_bad_members_become_failures_naming_archive_and_member(osv_root, preprocess, tmp_path):
    _, archive, _ = osv_root
    not_zip = tmp_path / "01.zip"
    not_zip.write_text("an HTML error page\n")
    records = [
        ImageRecord("ok", str(archive), "0000.jpg"),
        ImageRecord("corrupt", str(archive), "0004.jpg"),
        ImageRecord("missing", str(archive), "9999.jpg"),
        ImageRecord("text", str(archive), "notes.jpg"),
        ImageRecord("no_archive", str(tmp_path / "02.zip"), "0000.jpg"),
        ImageRecord("not_zip", str(not_zip), "0000.jpg"),
    ]
    batch = load_batch(records, preprocess)
    assert batch.image_ids == ["ok"]
    reasons = {f.image_id: f.reason for f in batch.failures}
    assert reasons["corrupt"].startswith("corrupt zip member '0004.jpg' in ")
    assert reasons["missing"] == f"member '9999.jpg' not found in zip archive {archive}"
    assert "'notes.jpg'" in reasons["text"] and "not a readable image" in reasons["text"]
    assert reasons["no_archive"] == "zip archive: file not found"
    assert reasons["not_zip"].startswith("not a readable zip archive") and str(not_zip) in reasons["not_zip"]
    assert {f.path for f in batch.failures} >= {str(archive), str(not_zip)}


def test_archive_opened_once_per_process(osv_root, preprocess, monkeypatch):
    _, archive, _ = osv_root
    opened = []
    real = zipfile.ZipFile

    def counting(*args, **kwargs):
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(zip_members.zipfile, "ZipFile", counting)
    records = [ImageRecord(f"r{i}", str(archive), f"{i % 3:04d}.jpg") for i in range(12)]
    batches = list(iter_batches(records, preprocess, batch_size=4, num_workers=0))
    assert sum(len(b) for b in batches) == 12
    assert len(opened) == 1


def test_archives_are_closed_when_a_pass_has_read_its_images(osv_root, preprocess):
    _, archive, _ = osv_root
    records = [ImageRecord(f"r{i}", str(archive), f"{i % 3:04d}.jpg") for i in range(6)]
    batches = iter_batches(records, preprocess, batch_size=2, num_workers=0)
    next(batches)
    assert zip_members.open_archive_count() == 1
    list(batches)
    assert zip_members.open_archive_count() == 0


def test_workers_read_members_in_order(osv_root, preprocess):
    _, archive, _ = osv_root
    records = [ImageRecord(f"r{i}", str(archive), f"{i % 3:04d}.jpg") for i in range(10)]
    read_member(str(archive), "0000.jpg")  # the parent holds a handle: forked workers must not share it
    inline = list(iter_batches(records, preprocess, batch_size=3, num_workers=0))
    workers = list(iter_batches(records, preprocess, batch_size=3, num_workers=2))
    assert [b.image_ids for b in inline] == [b.image_ids for b in workers]
    for a, b in zip(inline, workers):
        assert torch.equal(a.pixel_values, b.pixel_values)


def test_read_member_errors_are_member_errors(osv_root):
    _, archive, _ = osv_root
    with pytest.raises(MemberError, match="not found"):
        read_member(str(archive), "nope.jpg")
