"""Ingest with real files: good images in many forms, each kind of bad input, gold masks, privacy blur, the CLI."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataengine.catalog import open_catalog
from dataengine.cli import main as cli_main
from dataengine.images import decode_image
from dataengine.ingest import ingest, sam_bbox
from dataengine.storage import FileStore

from tests.fixtures_services import S3_BUCKET

RNG = np.random.default_rng(7)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(width: int, height: int) -> Image.Image:
    """A smooth colour image (compresses like a photograph, unlike noise)."""
    from skimage import data

    return Image.fromarray(data.coffee()).resize((width, height))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


GOOD = {
    "a_photo.jpg": lambda: encode(photo(640, 480), "JPEG", quality=92),
    "b_rgba.png": lambda: encode(photo(300, 200).convert("RGBA"), "PNG"),
    "c_gray.png": lambda: encode(photo(200, 300).convert("L"), "PNG"),
    "d_16bit.png": lambda: encode(Image.fromarray((np.asarray(photo(160, 120).convert("L"), np.uint16) * 257)), "PNG"),
    "e_cmyk.jpg": lambda: encode(photo(320, 240).convert("CMYK"), "JPEG"),
    "f_rotated.jpg": lambda: encode(photo(400, 300), "JPEG", exif=_orientation_exif(6)),
    "g_large.jpg": lambda: encode(photo(2400, 1800), "JPEG", quality=85),
    "sub/h_nested.webp": lambda: encode(photo(256, 256), "WEBP"),
}


def _orientation_exif(value: int) -> bytes:
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = value
    return exif.tobytes()


def _truncated() -> bytes:
    data = encode(photo(320, 240), "JPEG")
    return data[: len(data) // 2]


def _corrupt_png() -> bytes:
    data = bytearray(encode(photo(320, 240), "PNG"))
    middle = len(data) // 2
    data[middle:middle + 256] = RNG.integers(0, 256, 256, dtype=np.uint8).tobytes()
    return bytes(data)


BAD = {  # file name -> (bytes, the reason's expected wording)
    "bad_truncated.jpg": (_truncated, "truncated or corrupt JPEG data"),
    "bad_random.jpg": (lambda: RNG.integers(0, 256, 2048, dtype=np.uint8).tobytes(), "not a recognised image"),
    "bad_corrupt.png": (_corrupt_png, "truncated or corrupt PNG data"),
    "bad_notes.txt": (lambda: b"shopping list: milk, eggs\n", "not a recognised image"),
    "bad_empty.jpg": (lambda: b"", "zero-byte file"),
    "bad_bomb.png": (lambda: png_bomb(9000, 9000), "over the pixel limit: 9000x9000 = 81000000 pixels > 80000000"),
    "bad_huge_bomb.png": (lambda: png_bomb(60000, 60000), "over the pixel limit (decompression bomb guard)"),
    "bad_format.gif": (lambda: encode(photo(64, 64), "GIF"), "unsupported image format GIF"),
}


@pytest.fixture
def raw_folder(tmp_path) -> Path:
    folder = tmp_path / "raw"
    for name, make in GOOD.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(make())
    for name, (make, _) in BAD.items():
        (folder / name).write_bytes(make())
    (folder / ".hidden.jpg").write_bytes(b"not looked at")
    (folder / "a_photo.json").write_text("{}")  # a side-car, not an image
    return folder


@pytest.fixture
def store(tmp_path):
    return FileStore(tmp_path / "store")


@pytest.fixture
def catalog(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield catalog
    catalog.dispose()


def test_ingest_registers_good_images_once_and_quarantines_each_bad_one(raw_folder, store, catalog):
    report = ingest(raw_folder.as_uri(), store, catalog, run_id="first", blur=False)
    assert sorted(Path(r.source_uri).name for r in report.registered) == sorted(Path(n).name for n in GOOD)
    reasons = {Path(q.source_uri).name: q.reason for q in report.quarantined}
    assert set(reasons) == set(BAD)
    for name, (_, expected) in BAD.items():
        assert expected in reasons[name], f"{name}: {reasons[name]}"
    assert {Path(q.source_uri).name for q in catalog.list_quarantine(run_id="first")} == set(BAD)

    for registered in report.registered:
        source = Path(registered.source_uri[len("file://"):])
        assert registered.image_id == hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        stored = decode_image(store.get_bytes(f"images/{registered.image_id}.jpg"))
        assert (stored.width, stored.height) == (registered.width, registered.height)
        assert stored.source_format == "JPEG" and min(stored.width, stored.height) <= 1500
        row = catalog.get_image(registered.image_id)
        assert (row.width, row.height, row.split, row.source_uri) == (stored.width, stored.height, "train",
                                                                      registered.source_uri)
    sizes = {Path(r.source_uri).name: (r.width, r.height) for r in report.registered}
    assert sizes["f_rotated.jpg"] == (300, 400), "EXIF orientation 6 must turn 400x300 upright"
    assert sizes["g_large.jpg"] == (2000, 1500), "shortest side must come down to 1500"
    assert sizes["a_photo.jpg"] == (640, 480)

    keys_before = list(store.list())
    again = ingest(raw_folder.as_uri(), store, catalog, run_id="second", blur=False)
    assert again.registered == []
    assert sorted(p.image_id for p in again.already_present) == sorted(r.image_id for r in report.registered)
    assert len(again.quarantined) == len(BAD)
    assert list(store.list()) == keys_before
    assert catalog.count_images() == len(GOOD)
    assert len(catalog.list_quarantine()) == len(BAD), "re-ingest must not duplicate quarantine rows"


def test_same_content_under_two_names_is_registered_once(tmp_path, store, catalog):
    folder = tmp_path / "dupes"
    folder.mkdir()
    data = encode(photo(200, 150), "JPEG")
    (folder / "one.jpg").write_bytes(data)
    (folder / "two.jpg").write_bytes(data)
    report = ingest(str(folder), store, catalog, blur=False)
    assert [Path(r.source_uri).name for r in report.registered] == ["one.jpg"]
    assert [Path(p.source_uri).name for p in report.already_present] == ["two.jpg"]
    assert report.image_ids == [report.registered[0].image_id] * 2


def test_configurable_side_and_pixel_limits(tmp_path, store, catalog):
    folder = tmp_path / "sizes"
    folder.mkdir()
    (folder / "wide.png").write_bytes(encode(photo(900, 300), "PNG"))
    (folder / "square.png").write_bytes(encode(photo(1200, 1200), "PNG"))
    report = ingest(str(folder), store, catalog, max_side=200, max_pixels=1_000_000, blur=False)
    assert [(r.width, r.height) for r in report.registered] == [(600, 200)]
    assert [q.reason for q in report.quarantined] == [
        "over the pixel limit: 1200x1200 = 1440000 pixels > 1000000 (decompression bomb guard)"]


def test_face_in_a_real_photograph_is_blurred_before_storing(tmp_path, catalog):
    from skimage import data

    astronaut = data.astronaut()  # 512x512 RGB photograph of Eileen Collins; her face is near (180, 65)-(275, 160)
    folder = tmp_path / "people"
    folder.mkdir()
    (folder / "astronaut.png").write_bytes(encode(Image.fromarray(astronaut), "PNG"))

    blurred_store, plain_store = FileStore(tmp_path / "blurred"), FileStore(tmp_path / "plain")
    report = ingest(str(folder), blurred_store, catalog, blur=True)
    (registered,) = report.registered
    assert registered.privacy_regions >= 1
    assert catalog.get_image(registered.image_id).privacy_regions_blurred == registered.privacy_regions
    blurred = decode_image(blurred_store.get_bytes(f"images/{registered.image_id}.jpg")).pixels.astype(float)

    plain_catalog = open_catalog(f"sqlite:///{tmp_path / 'plain.db'}")
    ingest(str(folder), plain_store, plain_catalog, blur=False)
    plain = decode_image(plain_store.get_bytes(f"images/{registered.image_id}.jpg")).pixels.astype(float)
    plain_catalog.dispose()

    face = (slice(85, 150), slice(195, 260))        # eyes, nose, mouth
    background = (slice(400, 500), slice(20, 120))  # lower left, far from the face
    original = astronaut.astype(float)
    assert np.abs(plain[face] - original[face]).mean() < 4, "JPEG alone keeps the face"
    assert np.abs(blurred[face] - original[face]).mean() > 12, "the face must be blurred"
    assert np.abs(blurred[background] - original[background]).mean() < 4, "the rest must be untouched"
    # blurring removes the fine detail: the face's high-frequency energy collapses
    detail = lambda img: np.abs(np.diff(img[face].mean(axis=2), axis=1)).mean()  # noqa: E731
    assert detail(blurred) < 0.3 * detail(original)


def _sa1b_record(masks: list[np.ndarray]) -> dict:
    from pycocotools import mask as mask_utils

    annotations = []
    for index, mask in enumerate(masks):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append({"id": index, "segmentation": {"size": list(mask.shape), "counts": rle["counts"].decode()},
                            "bbox": sam_bbox(mask), "area": int(mask.sum()), "predicted_iou": 1.0,
                            "stability_score": 1.0, "crop_box": [0, 0, mask.shape[1], mask.shape[0]],
                            "point_coords": [[float(np.nonzero(mask)[1].mean()), float(np.nonzero(mask)[0].mean())]]})
    return {"image": {"image_id": 1, "width": masks[0].shape[1], "height": masks[0].shape[0],
                      "file_name": "expert.jpg"}, "annotations": annotations}


def test_gold_masks_follow_the_resized_image(tmp_path, store, catalog):
    from pycocotools import mask as mask_utils

    height, width = 1200, 1800                      # resized to 1000 x 1500 with max_side=1000
    rect = np.zeros((height, width), bool)
    rect[300:900, 600:1200] = True                  # 600 x 600 -> 500 x 500
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 200) ** 2 + (xx - 300) ** 2 < 150 ** 2
    folder = tmp_path / "gold"
    folder.mkdir()
    (folder / "expert.jpg").write_bytes(encode(photo(width, height), "JPEG"))
    (folder / "expert.json").write_text(json.dumps(_sa1b_record([rect, disc])))
    (folder / "nomasks.jpg").write_bytes(encode(photo(400, 300), "JPEG"))
    (folder / "wrongsize.jpg").write_bytes(encode(photo(400, 300), "JPEG"))
    (folder / "wrongsize.json").write_text(json.dumps(_sa1b_record([np.ones((301, 400), bool)])))

    report = ingest(str(folder), store, catalog, gold_set="g1", max_side=1000, blur=False)
    (registered,) = report.registered
    assert {Path(q.source_uri).name: q.reason for q in report.quarantined} == {
        "nomasks.jpg": "gold set g1: expert masks nomasks.json are missing beside the image",
        "wrongsize.jpg": "gold set g1: wrongsize.json annotation 0: RLE size [301, 400] does not match image "
                         "400x300 (expected [300, 400])"}
    image = catalog.get_image(registered.image_id)
    assert (image.split, image.gold_set, image.width, image.height) == ("gold", "g1", 1500, 1000)

    record = store.get_json(f"gold/g1/{registered.image_id}.json")
    assert record["image"] == {"image_id": registered.image_id, "width": 1500, "height": 1000,
                               "file_name": f"{registered.image_id}.jpg"}
    masks = [mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
             for a in record["annotations"]]
    assert all(m.shape == (1000, 1500) for m in masks)
    expected_rect = np.zeros((1000, 1500), bool)
    expected_rect[250:750, 500:1000] = True
    assert (masks[0].astype(bool) == expected_rect).mean() > 0.999
    rect_annotation, disc_annotation = record["annotations"]
    assert rect_annotation["bbox"] == [500, 250, 499, 499]  # SAM convention: max - min
    assert rect_annotation["area"] == int(masks[0].sum()) == pytest.approx(250_000, rel=0.01)
    assert disc_annotation["area"] == pytest.approx(np.pi * 125 ** 2, rel=0.01)
    assert disc_annotation["crop_box"] == [0, 0, 1500, 1000]
    assert disc_annotation["point_coords"][0] == pytest.approx([250.0, 166.67], abs=1.0)

    again = ingest(str(folder), store, catalog, gold_set="g1", max_side=1000, blur=False)
    assert again.registered == [] and [p.image_id for p in again.already_present] == [registered.image_id]


def test_ingest_from_an_s3_prefix_into_an_s3_store(s3_server, catalog):
    import uuid

    run = uuid.uuid4().hex[:8]
    raw = s3_server.store(S3_BUCKET, f"raw-{run}")
    raw.put_bytes("cams/1.jpg", encode(photo(320, 240), "JPEG"))
    raw.put_bytes("cams/2.png", encode(photo(240, 320), "PNG"))
    raw.put_bytes("cams/broken.jpg", _truncated())
    engine_store = s3_server.store(S3_BUCKET, f"engine-{run}")
    report = ingest(f"s3://{S3_BUCKET}/raw-{run}/cams", engine_store, catalog, blur=False)
    assert [Path(r.source_uri).name for r in report.registered] == ["1.jpg", "2.png"]
    assert report.registered[0].source_uri == f"s3://{S3_BUCKET}/raw-{run}/cams/1.jpg"
    assert [q.source_uri for q in report.quarantined] == [f"s3://{S3_BUCKET}/raw-{run}/cams/broken.jpg"]
    assert sorted(engine_store.list("images/")) == sorted(f"images/{r.image_id}.jpg" for r in report.registered)


def test_cli_prints_each_quarantined_file_and_reason(raw_folder, tmp_path, capsys):
    store_uri = (tmp_path / "cli-store").as_uri()
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    code = cli_main(["ingest", str(raw_folder), "--store", store_uri, "--db", db_url, "--no-blur",
                     "--run-id", "cli-run", "--report-key", "runs/ingest/cli-run/report.json"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{len(GOOD)} registered, 0 already present, {len(BAD)} quarantined" in out
    for name, (_, expected) in BAD.items():
        line = next(line for line in out.splitlines() if line.strip().startswith((raw_folder / name).as_uri()))
        assert expected in line
    saved = FileStore(tmp_path / "cli-store").get_json("runs/ingest/cli-run/report.json")
    assert len(saved["registered"]) == len(GOOD) and saved["run_id"] == "cli-run"


def test_cli_reports_a_missing_source(tmp_path, capsys):
    code = cli_main(["ingest", str(tmp_path / "nowhere"), "--store", (tmp_path / "s").as_uri(),
                     "--db", f"sqlite:///{tmp_path / 'c.db'}"])
    assert code == 2
    assert f"ingest source {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_privacy_detectors_are_the_shipped_cascades_and_count_regions():
    import cv2
    from skimage import data

    from dataengine.privacy import FACE_CASCADES, PLATE_CASCADES, blur_private_regions, blur_regions

    for name in FACE_CASCADES + PLATE_CASCADES:
        assert (Path(cv2.data.haarcascades) / name).is_file()
    astronaut = data.astronaut()
    faces_only = blur_private_regions(astronaut, faces=True, plates=False)
    assert len(faces_only.faces) == 1 and faces_only.regions == 1
    x, y, w, h = faces_only.faces[0]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 160, "the box must sit on the astronaut's face"
    nothing = blur_private_regions(astronaut, faces=False, plates=False)
    assert nothing.regions == 0 and np.array_equal(nothing.pixels, astronaut)
    for name in ("coffee", "chelsea", "rocket"):  # photographs without people or cars
        assert blur_private_regions(getattr(data, name)()).regions == 0, name
    # a licence-plate box is blurred like a face: inside changes, outside the padded box stays
    plate = blur_regions(astronaut, np.array([[300, 400, 80, 20]]))
    assert np.abs(plate[400:420, 300:380].astype(int) - astronaut[400:420, 300:380]).mean() > 5
    assert np.array_equal(plate[:390], astronaut[:390]) and np.array_equal(plate[:, :280], astronaut[:, :280])
