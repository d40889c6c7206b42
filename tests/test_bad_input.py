"""Bad input images through ingest and through a whole stage 3 DAG run (`dag.test()`), and no secret leaking
from that run: the store is a real S3 server (`weed mini`) reached through the `dataengine_store` connection
with keys made up for this test, which are then looked for in the task logs, XCom values, rendered template
fields, the catalog and every object the run wrote.

Every good image published, every bad one quarantined with its reason, 0 lost, the run green. The figures of
docs/reliability.md ("Bad input", "No secret in logs") come from here: each test prints `FIGURE` lines (`pytest -s`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataengine import config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def figure(text: str) -> None:
    """Print one measured figure (collected into docs/reliability.md)."""
    print(f"FIGURE bad input: {text}")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(name: str, width: int = 160, height: int = 120) -> Image.Image:
    """A small real photograph from scikit-image (each good image a different one, so none is a duplicate)."""
    from skimage import data

    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(pixels[:, :, :3]).resize((width, height))


def exif_orientation(value: int) -> bytes:
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = value
    return exif.tobytes()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def decompression_bomb(side: int = 9000) -> bytes:
    """A valid grayscale PNG of side x side zero pixels: ~80 KB on disk, 81 MP (243 MB as RGB) decoded."""
    packer, row, parts = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def sixteen_bit() -> bytes:
    gray = np.asarray(photo("camera").convert("L"), np.uint16) * 257
    return encode(Image.fromarray(gray), "PNG")


def with_alpha() -> bytes:
    image = photo("chelsea").convert("RGBA")
    alpha = np.full((image.height, image.width), 255, np.uint8)
    alpha[:, : image.width // 3] = 0                     # a transparent band, composited on white
    image.putalpha(Image.fromarray(alpha))
    return encode(image, "PNG")


def animation(fmt: str) -> bytes:
    frames = [photo("rocket").rotate(angle) for angle in (0, 10, 20)]
    if fmt == "GIF":
        frames = [frame.convert("P") for frame in frames]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def truncated(fmt: str) -> bytes:
    data = encode(photo("coffee", 320, 240), fmt)
    return data[: len(data) // 2]


# name -> bytes. Registered; `rotated.jpg` comes out upright (EXIF orientation 6: 160x120 stored, 120x160 shown).
GOOD = {
    "plain.jpg": lambda: encode(photo("coffee"), "JPEG", quality=92),
    "cmyk.jpg": lambda: encode(photo("astronaut").convert("CMYK"), "JPEG"),
    "deep16.png": sixteen_bit,
    "alpha.png": with_alpha,
    "palette.png": lambda: encode(photo("hubble_deep_field").convert("P", palette=Image.Palette.ADAPTIVE), "PNG",
                                  transparency=0),
    "rotated.jpg": lambda: encode(photo("immunohistochemistry"), "JPEG", exif=exif_orientation(6)),
}
# name -> (bytes, the reason's expected wording).
BAD = {
    "empty.jpg": (lambda: b"", "zero-byte file"),
    "truncated.jpg": (lambda: truncated("JPEG"), "truncated or corrupt JPEG data"),
    "truncated.png": (lambda: truncated("PNG"), "truncated or corrupt PNG data"),
    "notes.png": (lambda: b"meeting notes, not a picture\n" * 20, "not a recognised image"),
    "bomb.png": (decompression_bomb, "over the pixel limit: 9000x9000 = 81000000 pixels > 80000000"),
    "strip.png": (lambda: encode(Image.new("RGB", (5000, 1), (200, 30, 30)), "PNG"),
                  "too small to segment: 5000x1"),
    "panorama.png": (lambda: encode(photo("coffee", 2100, 100), "PNG"),
                     "too elongated to segment: 2100x100 (aspect ratio 21.0:1 > 20:1)"),
    "animated.gif": (lambda: animation("GIF"), "unsupported image format GIF"),
    "animated.webp": (lambda: animation("WEBP"), "WEBP holds 3 frames (animated or multi-page)"),
    "pages.tiff": (lambda: animation("TIFF"), "TIFF holds 3 frames (animated or multi-page)"),
}
# made by `bad_folder` itself: a link to a real image outside the folder, a link to a folder outside, a pipe
LINKS = {"passwd.jpg": "outside the source folder", "elsewhere": "outside the source folder",
         "pipe.jpg": "not a regular file (named pipe)"}
ALIAS = "alias.jpg"   # a link to plain.jpg inside the folder: read, and recognised as the same content


def bad_folder(root: Path) -> Path:
    """Write the good and bad images, the links and the pipe under `root/raw`; return that folder."""
    folder, outside = root / "raw", root / "outside"
    folder.mkdir(parents=True)
    outside.mkdir()
    for name, make in GOOD.items():
        (folder / name).write_bytes(make())
    for name, (make, _) in BAD.items():
        (folder / name).write_bytes(make())
    (outside / "private.jpg").write_bytes(encode(photo("rocket"), "JPEG"))
    (folder / "passwd.jpg").symlink_to(outside / "private.jpg")
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)
    os.mkfifo(folder / "pipe.jpg")
    (folder / ALIAS).symlink_to(folder / "plain.jpg")
    return folder


def expected_reasons() -> dict[str, str]:
    return {**{name: reason for name, (_, reason) in BAD.items()}, **LINKS}


def check_accounting(folder: Path, registered: dict, present: dict, quarantined: dict) -> None:
    """Every candidate file is registered, recognised as present, or quarantined with its reason: 0 lost."""
    names = {**{n: "registered" for n in registered}, **{n: "present" for n in present},
             **{n: "quarantined" for n in quarantined}}
    assert len(names) == len(registered) + len(present) + len(quarantined), "a file counted twice"
    assert set(names) == set(GOOD) | set(expected_reasons()) | {ALIAS}, "a file was lost (or invented)"
    assert set(registered) | set(present) >= set(GOOD)
    for name, expected in expected_reasons().items():
        assert expected in quarantined.get(name, ""), f"{name}: {quarantined.get(name)!r}"


def test_ingest_registers_every_good_image_and_quarantines_every_bad_one_with_its_reason(tmp_path):
    from dataengine.catalog import open_catalog
    from dataengine.images import decode_image
    from dataengine.ingest import ingest
    from dataengine.storage import FileStore

    folder = bad_folder(tmp_path)
    store, catalog = FileStore(tmp_path / "store"), open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    report = ingest(str(folder), store, catalog, run_id="bad-input", blur=False)
    registered = {Path(r.source_uri).name: r for r in report.registered}
    present = {Path(p.source_uri).name: p for p in report.already_present}
    quarantined = {Path(q.source_uri).name: q.reason for q in report.quarantined}
    check_accounting(folder, registered, present, quarantined)
    assert set(present) == {ALIAS} - set(registered) | {"plain.jpg"} - set(registered), "one of the pair is first"
    ids = {name: image.image_id for name, image in {**registered, **present}.items()}
    assert ids[ALIAS] == ids["plain.jpg"] and len(set(ids.values())) == len(GOOD)
    assert {Path(q.source_uri).name: q.reason for q in catalog.list_quarantine(run_id="bad-input")} == quarantined
    assert len(registered) == len(GOOD)
    for name, image in registered.items():
        stored = decode_image(store.get_bytes(f"images/{image.image_id}.jpg"))
        assert (stored.width, stored.height) == (image.width, image.height)
        expected = (120, 160) if name == "rotated.jpg" else (160, 120)
        assert (image.width, image.height) == expected, name
    alpha = decode_image(store.get_bytes(f"images/{ids['alpha.png']}.jpg")).pixels
    assert alpha[:, :40].mean() > 245, "the transparent band must be composited on white"
    assert not any("private" in key for key in store.list()), "nothing from outside the folder was stored"
    # nothing was read from beyond the links: the outside image is not in the catalog either
    outside_id = hashlib.sha256((tmp_path / "outside" / "private.jpg").read_bytes()).hexdigest()[:16]
    assert catalog.get_image(outside_id) is None
    # a second ingest changes nothing and duplicates no quarantine row
    keys = sorted(store.list())
    again = ingest(str(folder), store, catalog, run_id="bad-input-again", blur=False)
    assert again.registered == [] and len(again.quarantined) == len(quarantined)
    assert sorted(store.list()) == keys and len(catalog.list_quarantine()) == len(quarantined)
    catalog.dispose()
    figure(f"ingest: {len(GOOD) + len(quarantined) + 1} files ({len(GOOD)} good in 6 forms, {len(quarantined)} bad "
           f"in {len(quarantined)} forms, 1 link inside the folder): {len(registered)} registered, 1 recognised as a "
           f"duplicate, {len(quarantined)} quarantined with the expected reason, 0 lost; re-ingest: 0 new objects, "
           "0 new quarantine rows")


def test_an_s3_source_key_the_store_refuses_is_quarantined_not_fatal(s3_server, tmp_path):
    """A raw key the store will not address (here one that reads `../` once decoded) is quarantined with the reason.

    Before, any refused key (on AWS S3 `cams//2.jpg` is one; SeaweedFS normalises that away) raised ValueError
    out of the listing and stopped the whole ingest."""
    import uuid

    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest

    prefix = f"raw-{uuid.uuid4().hex[:8]}"
    raw = s3_server.store(prefix=prefix)
    raw.put_bytes("cams/1.jpg", GOOD["plain.jpg"]())
    raw.client.put_object(raw.bucket, f"{prefix}/cams/%2e%2e%2f2.jpg", io.BytesIO(b"x" * 10), 10)  # raw SDK call
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    report = ingest(f"s3://{raw.bucket}/{prefix}/cams", s3_server.store(prefix=f"engine-{prefix}"), catalog,
                    blur=False)
    assert [Path(r.source_uri).name for r in report.registered] == ["1.jpg"]
    assert [(Path(q.source_uri).name, q.reason.split(":")[0]) for q in report.quarantined] == [
        ("%2e%2e%2f2.jpg", "object key refused")]
    catalog.dispose()


# --- the stage 3 DAG run, on S3 through the `dataengine_store` connection ------------------------------------
ACCESS_KEY = "AKDE" + secrets.token_hex(8).upper()
SECRET_KEY = secrets.token_urlsafe(30)
BUCKET = "reliability"


@pytest.fixture(scope="module")
def s3_engine(tmp_path_factory, airflow_db):
    """An engine home whose store is a fresh `weed mini` with this module's keys, named by the connection."""
    from dataengine.catalog import open_catalog
    from dataengine.model.registry import ensure_bootstrap_model
    from tests.fixtures_services import WeedServer

    home = tmp_path_factory.mktemp("bad-input-home")
    server = WeedServer(home / "weed" / "data", access_key=ACCESS_KEY, secret_key=SECRET_KEY).start()
    saved = {name: os.environ.get(name) for name in ("DATAENGINE_HOME", "AIRFLOW_CONN_DATAENGINE_STORE")}
    host, port = server.endpoint.split(":")
    os.environ["DATAENGINE_HOME"] = str(home)
    os.environ["AIRFLOW_CONN_DATAENGINE_STORE"] = json.dumps({
        "conn_type": "generic", "host": host, "port": int(port), "schema": BUCKET, "login": ACCESS_KEY,
        "password": SECRET_KEY, "extra": {"secure": False, "prefix": "engine"}})
    try:
        store = server.store(BUCKET, "engine")
        catalog = open_catalog()
        model = ensure_bootstrap_model(store, catalog)
        yield {"home": home, "server": server, "store": store, "catalog": catalog, "model": model,
               "folder": bad_folder(home), "run": None}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def stage3_run(s3_engine, run_dag, capfd) -> dict:
    """Run the stage 3 DAG once for the module (whichever test comes first); return the run and its output."""
    if s3_engine["run"] is None:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / "sa_stage3_fully_automatic.py"))
        assert not bag.import_errors, bag.import_errors
        conf = {"source": str(s3_engine["folder"]), "preset": "sam_tiny", "shard_size": 3, "gold_set": "",
                "amg_settings": {"points_per_side": 8}, "min_masks_per_image": 0}
        run = run_dag(bag.dags["sa_stage3_fully_automatic"], run_conf=conf)
        captured = capfd.readouterr()
        s3_engine["run"] = {"dag_run": run, "output": captured.out + captured.err}
    return s3_engine["run"]


def test_stage3_run_publishes_every_good_image_and_quarantines_every_bad_one(s3_engine, run_dag, capfd):
    from airflow.utils.state import DagRunState

    from dataengine.release import release_id_for

    run = stage3_run(s3_engine, run_dag, capfd)["dag_run"]
    assert run.state == DagRunState.SUCCESS
    store, catalog = s3_engine["store"], s3_engine["catalog"]
    xcoms = dict(_metadata_rows(run)["xcom"])
    selection = json.loads(xcoms["select_images/return_value"])
    quarantined = {Path(q["source"]).name: q["reason"] for q in selection["quarantined"]}
    rows = {Path(q.source_uri).name: q.reason for q in catalog.list_quarantine(run_id=run.run_id)}
    assert rows == quarantined
    registered = {Path(image.source_uri).name: image.image_id for image in catalog.iter_images()}
    present = {name: image_id for name, image_id in {ALIAS: registered.get("plain.jpg"),
               "plain.jpg": registered.get(ALIAS)}.items() if image_id is not None}  # the pair: one came first
    check_accounting(s3_engine["folder"], registered, present, quarantined)
    release = catalog.get_release(release_id_for("stage3", run.run_id))
    manifest = store.get_json(release.key)
    assert manifest["counts"]["images"] == len(GOOD) == selection["images"]
    published = sorted(key.rsplit("/", 1)[1][: -len(".json")] for key in store.list("annotations/stage3/"))
    assert published == sorted(registered.values())
    assert run.get_task_instance("publish").state == "success"
    figure(f"stage 3 DAG run (dag.test, S3 store through the connection): {len(GOOD) + len(quarantined) + 1} files "
           f"in the source, {manifest['counts']['images']} images published ({manifest['counts']['masks']} masks), "
           f"{len(quarantined)} quarantined with their reasons, 1 duplicate, 0 lost, run {run.state}")


def _as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _metadata_rows(run) -> dict[str, list[str]]:
    """Return the run's XCom values ("task/key", JSON text) and rendered template fields (task, JSON text)."""
    from sqlalchemy import select

    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.dag_id == run.dag_id,
                                                        XComModel.run_id == run.run_id)).all()
        rendered = session.scalars(select(RenderedTaskInstanceFields).where(
            RenderedTaskInstanceFields.dag_id == run.dag_id, RenderedTaskInstanceFields.run_id == run.run_id)).all()
        return {"xcom": [(f"{x.task_id}/{x.key}", _as_text(XComModel.deserialize_value(x))) for x in xcoms],
                "rendered": [(r.task_id, json.dumps(r.rendered_fields, default=str)) for r in rendered]}


def test_no_configured_key_in_task_logs_xcom_rendered_fields_or_outputs(s3_engine, run_dag, capfd):
    result = stage3_run(s3_engine, run_dag, capfd)
    run, output = result["dag_run"], result["output"]
    from dataengine.release import release_id_for

    keys = {"access key": ACCESS_KEY, "secret key": SECRET_KEY}
    # the task logs were captured: what select_images and publish print is there
    assert f"{len(GOOD)} images selected" in output and "quarantined at ingest" in output, output[-3000:]
    assert f"release {release_id_for('stage3', run.run_id)}" in output
    rows = _metadata_rows(run)
    assert len(rows["xcom"]) >= 8 and len(rows["rendered"]) >= 3, {k: len(v) for k, v in rows.items()}
    log_files = [p for p in Path(os.environ["AIRFLOW_HOME"]).rglob("*.log") if p.is_file()]
    store = s3_engine["store"]
    objects = {key: store.get_bytes(key) for key in store.list()}
    assert any(key.startswith("releases/") for key in objects)
    catalog_bytes = (s3_engine["home"] / "catalog.db").read_bytes()
    places = {"task output": [output], "XCom values": [text for _, text in rows["xcom"]],
              "rendered template fields": [text for _, text in rows["rendered"]],
              "log files": [p.read_text(errors="replace") for p in log_files]}
    for what, value in keys.items():
        for place, texts in places.items():
            assert not any(value in text for text in texts), f"the {what} appears in the {place}"
        assert not any(value.encode() in data for data in objects.values()), f"the {what} is in a stored object"
        assert value.encode() not in catalog_bytes, f"the {what} is in the catalog"
    figure(f"secrets: the S3 access and secret keys of the connection searched in {len(output)} characters of task "
           f"output, {len(log_files)} log files, {len(rows['xcom'])} XCom values, {len(rows['rendered'])} rendered "
           f"template fields, {len(objects)} stored objects and the catalog: 0 found")
