"""SAM 2.1 in every stage: strict loading of official checkpoint files, the embedding cache and the annotation
service's predictor against `SAM2ImagePredictor`, stage 3 against `SAM2AutomaticMaskGenerator`, a stage 3 DAG
run, and decoder fine-tuning with the promotion gate.

No weights can be downloaded: the architectures are built from the `sam2` package's own configs with random
weights (the hypernetworks' output layers scaled up, so the random logits cross the +-1 stability band and the
masks differ from prompt to prompt) and saved in the official file format `{"model": state_dict}`.
"""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch

TINY = "sam2.1_hiera_tiny"


def random_sam2(name: str = TINY, seed: int = 21):
    """A SAM 2 model of `name` with seeded random weights whose mask logits reach beyond +-1."""
    from dataengine.model.sam2_loading import build_sam2_model

    torch.manual_seed(seed)
    model = build_sam2_model(name)
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100.0)
    return model


def official_file(model) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict()}, buffer)
    return buffer.getvalue()


def scene(height: int = 96, width: int = 128, seed: int = 0):
    rng = np.random.RandomState(seed)
    image = np.full((height, width, 3), 40, np.uint8)
    for _ in range(6):
        y, x = rng.randint(0, height - 20), rng.randint(0, width - 20)
        image[y:y + rng.randint(10, 40), x:x + rng.randint(10, 40)] = rng.randint(0, 255, 3)
    return image


@pytest.fixture(scope="module")
def sam2_tiny():
    return random_sam2()


@pytest.fixture(scope="module")
def checkpoint(sam2_tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    path.write_bytes(official_file(sam2_tiny))
    return path


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- loading -------------------------------------------------------------------------------------------------

def test_sam2_names_are_registered_and_built_from_the_package_configs():
    from sam2.modeling.sam2_base import SAM2Base

    from dataengine.model import registered_names
    from dataengine.model.sam2_loading import build_sam2_model, is_sam2

    for size in ("tiny", "small", "base_plus", "large"):
        assert f"sam2.1_hiera_{size}" in registered_names() and f"sam2_hiera_{size}" in registered_names()
    model = build_sam2_model(TINY)
    assert isinstance(model, SAM2Base) and is_sam2(model) and not model.training
    assert model.image_size == 1024 and model.sam_mask_decoder.pred_obj_scores
    assert model.sam_mask_decoder.dynamic_multimask_via_stability      # the image predictor's post-processing
    assert not is_sam2(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="registered: .*sam2.1_hiera_large"):
        from dataengine.model import load_model

        load_model("sam2.1_hiera_huge")


def test_official_checkpoint_file_loads_strictly_from_path_uri_and_bytes(sam2_tiny, checkpoint):
    from dataengine.model import load_model

    for source in (str(checkpoint), checkpoint.as_uri(), checkpoint.read_bytes()):
        loaded = load_model(TINY, checkpoint=source, device="cpu")
        assert same_weights(loaded, sam2_tiny) and not loaded.training
    assert not same_weights(load_model(TINY, device="cpu"), sam2_tiny)


def test_wrong_or_truncated_checkpoint_is_refused_with_a_clear_error(checkpoint, tmp_path):
    from dataengine.model import load_model
    from dataengine.model.loading import CheckpointMismatch

    data = checkpoint.read_bytes()
    with pytest.raises(CheckpointMismatch, match="not a loadable torch checkpoint"):
        load_model(TINY, checkpoint=data[: len(data) // 2])
    sam2_0 = official_file(random_sam2("sam2_hiera_tiny"))      # SAM 2.0 lacks SAM 2.1's object-pointer keys
    with pytest.raises(CheckpointMismatch, match="missing keys: .*obj_ptr_tpos_proj"):
        load_model(TINY, checkpoint=sam2_0)
    with pytest.raises(CheckpointMismatch, match="for sam2.1_hiera_small does not fit the architecture"):
        load_model("sam2.1_hiera_small", checkpoint=data)
    state = torch.load(io.BytesIO(data), weights_only=True)["model"]
    del state["sam_mask_decoder.iou_token.weight"]
    buffer = io.BytesIO()
    torch.save({"model": state}, buffer)
    with pytest.raises(CheckpointMismatch, match="missing keys: sam_mask_decoder.iou_token.weight"):
        load_model(TINY, checkpoint=buffer.getvalue())


# --- embedding cache and the annotation service's predictor ---------------------------------------------------

PROMPTS = [
    dict(point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1])),
    dict(point_coords=np.array([[60.0, 40.0], [20.0, 80.0]]), point_labels=np.array([1, 0])),
    dict(box=np.array([25.0, 15.0, 95.0, 65.0])),
    dict(point_coords=np.array([[50.0, 50.0]]), point_labels=np.array([1]), box=np.array([25.0, 15.0, 95.0, 65.0])),
]


def test_cached_embedding_predicts_like_sam2_image_predictor(sam2_tiny, tmp_path):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from dataengine.model.embeddings import (compute_embedding, load_embedding, predictor_from_embedding,
                                             save_embedding)
    from dataengine.storage import FileStore

    image, store = scene(), FileStore(tmp_path / "store")
    reference = SAM2ImagePredictor(sam2_tiny)
    reference.set_image(image)
    embedding = compute_embedding(sam2_tiny, image)
    assert embedding.input_size == (1024, 1024) and embedding.original_size == (96, 128)
    save_embedding(store, "sam2.1_hiera_tiny-v1", "img1", embedding)
    stored = np.load(tmp_path / "store" / "embeddings" / "sam2.1_hiera_tiny-v1" / "img1.npy", allow_pickle=False)
    assert stored["features"].shape == (256, 64, 64)
    assert stored["high_res_0"].shape == (32, 256, 256) and stored["high_res_1"].shape == (64, 128, 128)
    assert stored["high_res_0"].dtype == np.float16
    exact = predictor_from_embedding(sam2_tiny, embedding)
    cached = predictor_from_embedding(sam2_tiny, load_embedding(store, "sam2.1_hiera_tiny-v1", "img1"))
    first_low_res = None
    for prompt in PROMPTS + ["mask"]:
        if prompt == "mask":   # the previous candidate's low-res logits fed back with a new click, one mask out
            prompt = dict(point_coords=np.array([[60.0, 40.0], [70.0, 30.0]]), point_labels=np.array([1, 1]),
                          mask_input=first_low_res, multimask_output=False)
        a_masks, a_iou, a_low = reference.predict(**prompt)
        b_masks, b_iou, b_low = exact.predict(**prompt)
        assert b_masks.dtype == bool and len(b_masks) == (1 if prompt.get("multimask_output") is False else 3)
        assert np.array_equal(a_masks > 0.5, b_masks) and np.array_equal(a_iou, b_iou)
        assert np.array_equal(a_low, b_low)
        c_masks, c_iou, _ = cached.predict(**prompt)          # from the fp16 cache
        for a, c in zip(a_masks > 0.5, c_masks):
            assert (a & c).sum() / max(1, (a | c).sum()) >= 0.99
        assert np.allclose(a_iou, c_iou, atol=1e-2)
        first_low_res = first_low_res if first_low_res is not None else a_low[int(np.argmax(a_iou))][None]
    with pytest.raises(ValueError, match="not computed by a SAM 2 model"):
        from dataengine.model.embeddings import ImageEmbedding

        predictor_from_embedding(sam2_tiny, ImageEmbedding(embedding.features, (96, 128), (1024, 1024)))


def test_annotation_service_predicts_three_candidates_with_a_registered_sam2_model(sam2_tiny, checkpoint,
                                                                                   tmp_path):
    from dataengine.catalog import open_catalog
    from dataengine.model.registry import register_model
    from dataengine.service.predictors import PredictorCache
    from dataengine.storage import FileStore

    store = FileStore(tmp_path / "store")
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    ref = register_model(store, catalog, TINY, "v1", checkpoint.read_bytes())
    store.put_bytes("images/img1.jpg", _jpeg(scene()))
    cache = PredictorCache(store, device="cpu")
    owner = ("task-1", "ann")
    first = cache.predict(ref, "img1", owner, points=[[60, 40]], labels=[1])
    assert len(first) == 3 and all(c.mask.shape == (96, 128) and c.mask.dtype == bool for c in first)
    assert store.exists("embeddings/sam2.1_hiera_tiny-v1/img1.npy")     # computed once, cached
    boxed = cache.predict(ref, "img1", owner, points=[], labels=[], box=[25, 15, 95, 65])
    assert len(boxed) == 3
    refined = cache.predict(ref, "img1", owner, points=[[60, 40], [70, 30]], labels=[1, 1],
                            mask_handle=first[0].handle, multimask=False)
    assert len(refined) == 1 and 0.0 <= refined[0].predicted_iou <= 1.0


def _jpeg(image) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# --- stage 3: the automatic generator -------------------------------------------------------------------------

def test_sam2_settings_have_sam2s_own_defaults():
    from dataengine.pipeline.automatic import generator_settings
    from dataengine.pipeline.manual import prefill_settings
    from dataengine.sam2_amg import SAM2_OFFICIAL_DEFAULTS, resolve_sam2_settings

    official = generator_settings("official", {}, TINY)
    assert official["pred_iou_thresh"] == 0.8 and official["stability_score_thresh"] == 0.95
    assert official["points_per_side"] == 32 and official["use_m2m"] is False and official["output_mode"] == "coco_rle"
    assert generator_settings("official", {})["pred_iou_thresh"] == 0.88            # SAM's, for SAM models
    assert prefill_settings("official", {}, 0.5, TINY)["pred_iou_thresh"] == 0.9    # stage 2: 0.8 halfway to 1
    assert resolve_sam2_settings("sa1b")["crop_n_layers"] == 2
    assert set(SAM2_OFFICIAL_DEFAULTS) - {"points_per_batch"} <= set(resolve_sam2_settings())
    with pytest.raises(TypeError, match="unknown SAM 2 mask generator setting"):
        resolve_sam2_settings(points_per_sid=8)


def _check_against_official(model, image, settings):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from dataengine.amg import match_records
    from dataengine.sam2_amg import Sam2MaskGenerator

    reference = SAM2AutomaticMaskGenerator(model, **settings).generate(image)
    ours = Sam2MaskGenerator(model, **settings).generate(image)
    report = match_records(reference, ours, min_iou=0.99)
    assert report["matched"], report
    assert len(reference) >= 3, "settings too strict: the comparison needs masks"
    for a, b in zip(sorted(reference, key=lambda r: r["predicted_iou"]), sorted(ours, key=lambda r: r["predicted_iou"])):
        assert list(b) == list(a)                               # the official keys, in the official order
        assert b["crop_box"] == a["crop_box"] and np.allclose(b["point_coords"], a["point_coords"])
    return ours


def test_stage3_masks_equal_sam2_automatic_mask_generators(sam2_tiny):
    settings = dict(points_per_side=4, pred_iou_thresh=0.5, stability_score_thresh=0.6, box_nms_thresh=0.9,
                    output_mode="coco_rle")
    _check_against_official(sam2_tiny, scene(), settings)


def test_mask_to_mask_refinement_and_low_res_cleanup_match_the_official_generator(sam2_tiny, monkeypatch):
    """`use_m2m` and `min_mask_region_area` (holes and sprinkles of the low-res logits). The official code finds
    components with its CUDA kernel; the GPU stand-in here is the engine's CPU version of the same contract,
    itself checked against scikit-image's 8-connected labelling."""
    import sam2.utils.misc
    from skimage.measure import label

    from dataengine.sam2_amg import connected_components

    rng = np.random.RandomState(3)
    planes = torch.from_numpy(rng.rand(2, 1, 40, 50) > 0.6)
    labels, areas = connected_components(planes)
    for plane, plane_labels, plane_areas in zip(planes[:, 0].numpy(), labels[:, 0].numpy(), areas[:, 0].numpy()):
        expected = label(plane, connectivity=2)
        assert np.array_equal(plane_labels > 0, plane) and len(np.unique(plane_labels)) == len(np.unique(expected))
        sizes = np.bincount(expected.ravel())
        assert np.array_equal(plane_areas, np.where(plane, sizes[expected], 0))
    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", connected_components)
    # refined random-weight masks are alike, so box NMS is off (1.0) to compare every one of them
    settings = dict(points_per_side=3, pred_iou_thresh=0.3, stability_score_thresh=0.3, box_nms_thresh=1.0,
                    use_m2m=True, min_mask_region_area=400, output_mode="uncompressed_rle")
    _check_against_official(sam2_tiny, scene(seed=1), settings)


# --- a stage 3 DAG run with a registered, promoted SAM 2.1 checkpoint ------------------------------------------

@pytest.fixture(scope="module")
def sam2_engine(tmp_path_factory, airflow_db, checkpoint):
    """An engine home with `sam2.1_hiera_tiny/v1` registered and promoted through the CLI, and a gold set."""
    from dataengine import cli
    from dataengine.catalog import open_catalog
    from dataengine.ingest import ingest
    from dataengine.storage import open_store
    from dataengine.synth import write_scenes

    home = tmp_path_factory.mktemp("sam2-home")
    previous = os.environ.get("DATAENGINE_HOME")
    os.environ["DATAENGINE_HOME"] = str(home)
    store, catalog = open_store(), open_catalog()
    assert cli.main(["models", "register", f"{TINY}/v1", str(checkpoint)]) == 0
    assert cli.main(["models", "promote", f"{TINY}/v1", "--reason", "SAM 2.1 in production"]) == 0
    gold_dir, images_dir = home / "gold", home / "images"
    write_scenes(gold_dir, 1, seed=720_000)
    write_scenes(images_dir, 1, seed=730_000)
    for stray in images_dir.glob("*.json"):
        stray.unlink()
    ingest(str(gold_dir), store, catalog, gold_set="sam2-gold", run_id="sam2-gold")
    yield {"home": home, "store": store, "catalog": catalog, "images": str(images_dir)}
    if previous is None:
        os.environ.pop("DATAENGINE_HOME", None)
    else:
        os.environ["DATAENGINE_HOME"] = previous


def test_register_refuses_a_file_that_is_not_a_checkpoint_of_the_name(sam2_engine, tmp_path):
    from dataengine import cli

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(SystemExit, match="is not a sam2.1_hiera_large checkpoint"):
        cli.main(["models", "register", "sam2.1_hiera_large/v1", str(truncated)])
    assert sam2_engine["catalog"].get_model_version("sam2.1_hiera_large", "v1") is None


@pytest.mark.slow
def test_stage3_dag_runs_with_the_production_sam2_model(sam2_engine, run_dag):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    from dataengine import config
    from dataengine.formats.sa1b import validate_sa1b_record
    from dataengine.formats.shards import read_shard
    from dataengine.release import release_id_for

    bag = DagBag(dag_folder=str(config.CHECKOUT_DIR / "dags" / "sa_stage3_fully_automatic.py"))
    conf = {"source": sam2_engine["images"], "model": TINY, "gold_set": "sam2-gold", "preset": "official",
            "shard_size": 2,
            "amg_settings": {"points_per_side": 4, "pred_iou_thresh": 0.45, "stability_score_thresh": 0.5}}
    run = run_dag(bag.dags["sa_stage3_fully_automatic"], run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    store, catalog = sam2_engine["store"], sam2_engine["catalog"]
    release = catalog.get_release(release_id_for("stage3", run.run_id))
    manifest = store.get_json(release.key)
    assert manifest["model"]["version_id"] == f"{TINY}/v1"
    assert manifest["counts"]["images"] == 2 and manifest["counts"]["masks"] > 0
    assert manifest["settings"]["pred_iou_thresh"] == 0.45 and manifest["settings"]["use_m2m"] is False
    records = list(read_shard(store.get_bytes(release.key.rsplit("/", 1)[0] + "/sa_000000.tar")))
    assert len(records) == 2
    for record, _ in records:
        validate_sa1b_record(record)
        assert all(a["crop_box"] == [0, 0, record["image"]["width"], record["image"]["height"]]
                   for a in record["annotations"])


# --- retraining: decoder fine-tuning, gold evaluation, the promotion gate ---------------------------------------

@pytest.mark.slow
def test_fine_tuning_trains_the_decoder_only_and_the_gate_decides(sam2_engine):
    from dataengine.model import load_model
    from dataengine.model.registry import resolve
    from dataengine.pipeline.retrain import evaluate_on_gold, fine_tune, load_gold_examples, promotion_decision

    store, catalog = sam2_engine["store"], sam2_engine["catalog"]
    gold = next(catalog.iter_images(split="gold"))
    record = store.get_json(f"gold/{gold.gold_set}/{gold.image_id}.json")
    record["annotations"] = record["annotations"][:2]          # two objects keep the CPU test short
    store.put_json(f"annotations/stage1/{gold.image_id}.json", record)     # a stand-in human record
    store.put_json("runs/test/snapshot.json", {"records": [f"annotations/stage1/{gold.image_id}.json"]})
    parent = resolve(store, catalog, TINY)
    candidate = fine_tune(store, catalog, parent, "runs/test/snapshot.json", steps=1, lr=1e-3, log=lambda *_: None)
    assert candidate["version_id"] == f"{TINY}/v2" and candidate["status"] == "candidate"
    before = load_model(TINY, checkpoint=store.get_bytes(parent["key"]), device="cpu").state_dict()
    after = load_model(TINY, checkpoint=store.get_bytes(candidate["key"]), device="cpu").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("sam_mask_decoder.") for k in changed)
    card = store.get_json(candidate["key"].rsplit("/", 1)[0] + "/card.json")
    assert card["trained"] == "sam_mask_decoder" and card["settings"]["loss"] == "focal_dice"
    examples, records = load_gold_examples(store, catalog, "sam2-gold", max_images=1)
    examples = [(image_id, pixels, masks[:2]) for image_id, pixels, masks in examples]
    records = {image_id: {**r, "annotations": r["annotations"][:2]} for image_id, r in records.items()}
    settings = {"points_per_side": 4, "pred_iou_thresh": 0.45, "stability_score_thresh": 0.5}
    metrics = [evaluate_on_gold(store, ref, examples, records, "official", settings, log=lambda *_: None)
               for ref in (candidate, parent)]
    for m in metrics:
        assert 0.0 <= m["miou@1"] <= 1.0 and m["noc@90"] >= 1 and "stage3_precision_at_90" in m
    decision = promotion_decision(*metrics)
    assert isinstance(decision["promote"], bool) and decision["reasons"]
