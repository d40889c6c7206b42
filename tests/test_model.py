"""Model registry, strict checkpoint loading (file, path, s3), devices, embedding cache and predictors."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dataengine.model import load_model
from dataengine.model.loading import ARCHITECTURES, CheckpointMismatch, build_model


def tiny(seed=0):
    torch.manual_seed(seed)
    return load_model("sam_tiny", device="cpu")


def save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_registered_names_and_unknown_name():
    from segment_anything.modeling import Sam

    assert set(ARCHITECTURES) == {"sam_vit_h", "sam_vit_l", "sam_vit_b", "sam_tiny"}
    assert isinstance(tiny(), Sam) and not tiny().training
    with pytest.raises(ValueError, match="unknown model 'sam_vit_x'"):
        load_model("sam_vit_x")


def test_checkpoint_round_trip_from_path_file_uri_and_wrapped_form(tmp_path):
    trained = tiny(seed=1)
    raw = save(trained.state_dict(), tmp_path / "raw.pt")
    wrapped = save({"model": trained.state_dict(), "config": {}}, tmp_path / "wrapped.pt")
    for source in (str(raw), raw.as_uri(), wrapped.as_uri()):
        assert same_weights(load_model("sam_tiny", checkpoint=source, device="cpu"), trained)
    assert not same_weights(tiny(seed=2), trained)


def test_config_in_checkpoint_builds_that_architecture(tmp_path):
    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(3)
    shallow = build_sam_tiny({"decoder_depth": 1})
    path = save({"model": shallow.state_dict(), "config": {"decoder_depth": 1}}, tmp_path / "shallow.pt")
    loaded = load_model("sam_tiny", checkpoint=str(path), device="cpu")
    assert len(loaded.mask_decoder.transformer.layers) == 1 and same_weights(loaded, shallow)


def test_mismatching_checkpoint_names_missing_unexpected_and_misshaped_keys(tmp_path):
    state = tiny().state_dict()
    missing = dict(state)
    del missing["mask_decoder.iou_token.weight"]
    with pytest.raises(CheckpointMismatch, match=r"missing keys: mask_decoder\.iou_token\.weight"):
        load_model("sam_tiny", checkpoint=str(save(missing, tmp_path / "a.pt")))
    extra = {**state, "head.extra": torch.zeros(2)}
    with pytest.raises(CheckpointMismatch, match=r"unexpected keys: head\.extra"):
        load_model("sam_tiny", checkpoint=str(save(extra, tmp_path / "b.pt")))
    shaped = {**state, "mask_decoder.iou_token.weight": torch.zeros(1, 7)}
    with pytest.raises(CheckpointMismatch, match=r"shape mismatches: mask_decoder\.iou_token\.weight \(1, 7\)"):
        load_model("sam_tiny", checkpoint=str(save(shaped, tmp_path / "c.pt")))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="not a loadable torch checkpoint"):
        load_model("sam_tiny", checkpoint=str(tmp_path / "junk.pt"))


def test_official_vit_b_builder_refuses_a_tiny_checkpoint(tmp_path):
    path = save(tiny().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointMismatch, match="missing keys: image_encoder"):
        load_model("sam_vit_b", checkpoint=str(path))
    assert build_model("sam_vit_b").image_encoder.img_size == 1024


def test_checkpoint_from_s3(s3_server, s3_store, monkeypatch):
    trained = tiny(seed=4)
    buffer = io.BytesIO()
    torch.save({"model": trained.state_dict(), "config": {}}, buffer)
    uri = s3_store.put_bytes("models/sam_tiny/v9/model.pt", buffer.getvalue())
    monkeypatch.setenv("DATAENGINE_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("DATAENGINE_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("DATAENGINE_S3_SECRET_KEY", s3_server.secret_key)
    monkeypatch.setenv("DATAENGINE_S3_SECURE", "false")
    assert uri.startswith("s3://")
    assert same_weights(load_model("sam_tiny", checkpoint=uri, device="cpu"), trained)


def test_device_selection_and_cpu_autocast_is_exact():
    from dataengine.model.device import autocast, default_points_per_batch, select_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected
    assert select_device("cpu").type == "cpu"
    with autocast("cpu"):
        x = torch.randn(4, 4)
        assert (x @ x).dtype == torch.float32
    assert default_points_per_batch("cpu") == 64


def scene():
    rng = np.random.RandomState(0)
    image = np.full((90, 120, 3), 30, np.uint8)
    image[20:60, 30:90] = rng.randint(100, 255, 3)
    return image


def test_predictor_from_embedding_predicts_like_set_image(tmp_path):
    from segment_anything import SamPredictor

    from dataengine.model.embeddings import compute_embedding, predictor_from_embedding

    model, image = tiny(), scene()
    reference = SamPredictor(model)
    reference.set_image(image)
    embedding = compute_embedding(model, image)
    assert embedding.original_size == (90, 120) and embedding.input_size == tuple(reference.input_size)
    rebuilt = predictor_from_embedding(model, embedding)
    point = np.array([[60.0, 40.0]])
    for box in (None, np.array([25, 15, 95, 65])):
        a = reference.predict(point, np.array([1]), box=box, return_logits=True)
        b = rebuilt.predict(point, np.array([1]), box=box, return_logits=True)
        for x, y in zip(a, b):
            assert np.array_equal(x, y)


def test_cached_fp16_embedding_gives_the_same_masks(tmp_path):
    from segment_anything import SamPredictor

    from dataengine.model.embeddings import (cached_embedding, embedding_key, load_embedding,
                                             predictor_from_embedding)
    from dataengine.storage import FileStore

    model, image, store = tiny(), scene(), FileStore(tmp_path / "store")
    first = cached_embedding(store, model, "sam_tiny-v0", "img1", image)
    assert store.exists(embedding_key("sam_tiny-v0", "img1"))
    assert first.features.dtype == np.float16
    stored = np.load(tmp_path / "store" / "embeddings" / "sam_tiny-v0" / "img1.npy", allow_pickle=False)
    assert stored["features"].dtype == np.float16 and list(stored["original_size"]) == [90, 120]
    again = cached_embedding(store, None, "sam_tiny-v0", "img1", image)        # served from the cache
    assert np.array_equal(again.features, first.features)
    reference = SamPredictor(model)
    reference.set_image(image)
    cached = predictor_from_embedding(model, load_embedding(store, "sam_tiny-v0", "img1"))
    for point in ([[60.0, 40.0]], [[10.0, 10.0]], [[100.0, 70.0]]):
        a_masks, a_iou, _ = reference.predict(np.array(point), np.array([1]))
        b_masks, b_iou, _ = cached.predict(np.array(point), np.array([1]))
        for a, b in zip(a_masks, b_masks):
            assert (a & b).sum() / max(1, (a | b).sum()) >= 0.99
        assert np.allclose(a_iou, b_iou, atol=1e-2)


def test_embedding_names_are_checked_and_bad_bytes_refused():
    from dataengine.model.embeddings import embedding_from_bytes, embedding_key

    assert embedding_key("sam_tiny-v0", "abc") == "embeddings/sam_tiny-v0/abc.npy"
    with pytest.raises(ValueError, match="image_id"):
        embedding_key("sam_tiny-v0", "a/b")
    with pytest.raises(ValueError, match="not an embedding record"):
        embedding_from_bytes(b"garbage", "embeddings/x/y.npy")


def test_sam_tiny_low_res_masks_are_128px_and_feed_back_as_mask_prompts():
    from segment_anything import SamPredictor

    sam = tiny()
    assert sam.prompt_encoder.mask_input_size == (128, 128)          # 4 px of the 256 px frame per logit
    predictor = SamPredictor(sam)
    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    predictor.set_image(image)
    masks, scores, low_res = predictor.predict(np.array([[60, 45]]), np.array([1]), multimask_output=True)
    assert masks.shape == (3, 90, 120) and low_res.shape == (3, 128, 128)
    again, _, _ = predictor.predict(np.array([[60, 45], [10, 10]]), np.array([1, 0]),
                                    mask_input=low_res[:1], multimask_output=False)
    assert again.shape == (1, 90, 120)


def test_click_maps_mark_the_clicked_tokens_and_nothing_else():
    sam = tiny()
    encoder = sam.prompt_encoder
    assert encoder.click_sigma > 0
    coords = torch.tensor([[[100.0, 60.0], [10.0, 200.0]]])           # input frame (256 px), x then y
    maps = encoder.click_maps(coords, torch.tensor([[1, -1]]))         # the second is padding: draws nothing
    strength = maps[0].norm(dim=0)
    assert maps.shape == (1, 128, 32, 32)
    y, x = divmod(int(strength.argmax()), 32)
    assert (y, x) == (60 // 8, 100 // 8)
    assert strength[200 // 8, 10 // 8] < 1e-6 * strength.max()
    positive = encoder.click_maps(coords[:, :1], torch.tensor([[1]]))
    negative = encoder.click_maps(coords[:, :1], torch.tensor([[0]]))
    assert torch.allclose(maps, positive) and not torch.allclose(positive, negative)
    # the prompt encoder adds them to the dense embedding of point prompts (SamPredictor's path)
    sparse, dense = encoder(points=(coords[:, :1], torch.tensor([[1]])), boxes=None, masks=None)
    plain = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(dense)
    assert torch.allclose(dense - plain, positive, atol=1e-6)


def test_checkpoints_from_before_click_maps_still_load(tmp_path):
    from dataengine.model.tiny import TINY_CONFIG, build_sam_tiny

    config = {k: v for k, v in TINY_CONFIG.items() if k != "click_sigma"}
    torch.manual_seed(4)
    old = build_sam_tiny({**config, "click_sigma": 0.0})
    path = save({"model": old.state_dict(), "config": config}, tmp_path / "old.pt")
    loaded = load_model("sam_tiny", checkpoint=str(path), device="cpu")
    assert not hasattr(loaded.prompt_encoder, "click_maps") and same_weights(loaded, old)
    new = tiny(seed=5)
    raw = save(new.state_dict(), tmp_path / "raw.pt")                 # a raw state dict with click maps
    assert same_weights(load_model("sam_tiny", checkpoint=str(raw), device="cpu"), new)


def test_mask_aware_iou_agrees_across_predictor_generator_and_training_paths():
    """The default sam_tiny scores its masks with MaskAwareDecoder: the official predictor's path
    (MaskDecoder.forward -> predict_masks), the generator's PointDecoder and the training decode give the same
    masks and predicted IoUs for the same single-point prompts."""
    import numpy as np
    from segment_anything import SamPredictor

    from dataengine.model.decoding import PointDecoder
    from dataengine.model.tiny import build_sam_tiny
    from dataengine.model.training import decode

    torch.manual_seed(3)
    model = build_sam_tiny().eval()
    assert hasattr(model.mask_decoder, "score_masks") and not hasattr(model.mask_decoder, "iou_prediction_head")
    image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    points = np.array([[40.0, 30.0], [100.0, 80.0], [150.0, 10.0]])
    model_points = torch.as_tensor(predictor.transform.apply_coords(points, image.shape[:2]), dtype=torch.float64)
    labels = torch.ones(len(points), 1, dtype=torch.int)
    with torch.no_grad():
        official_masks, official_iou, official_low = predictor.predict_torch(
            model_points[:, None].float(), labels, multimask_output=True, return_logits=True)
        decoder = PointDecoder(model)
        decoder.set_features(predictor.features)
        decoded = decoder.decode(decoder.embed_points(model_points), model_points)
        sparse, dense = model.prompt_encoder(points=(model_points[:, None].float(), labels), boxes=None, masks=None)
        low, iou = decode(model, predictor.features.expand(len(points), -1, -1, -1),
                          model.prompt_encoder.get_dense_pe(), sparse, dense)
    assert torch.allclose(decoded.iou, official_iou, atol=1e-5)
    assert torch.allclose(iou[:, 1:], official_iou, atol=1e-5)
    assert torch.allclose(decoded.low_res, official_low, atol=1e-4)
    index = torch.tensor([0, 1, 2])
    assert torch.allclose(decoder.mask_logits(decoded, index, index), official_low[index, index], atol=1e-4)


def test_mask_aware_score_reads_the_mask_and_the_token_head_does_not():
    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(1)
    aware = build_sam_tiny().mask_decoder
    b, k, c = 2, 3, aware.transformer_dim
    tokens, mask_tokens, image = torch.randn(b, c), torch.randn(b, k, c), torch.randn(b, c, 32, 32)
    masks = torch.randn(b, k, 128, 128)
    with torch.no_grad():
        first = aware.score_masks(tokens, mask_tokens, image, masks)
        moved = aware.score_masks(tokens, mask_tokens, image, masks.roll(40, dims=-1))
    assert first.shape == (b, k) and not torch.allclose(first, moved)


def test_checkpoints_from_before_the_mask_aware_head_still_load(tmp_path):
    """v0s written before `iou_head` and `instance_dim` existed load as the token-head architecture."""
    from dataengine.model.tiny import TINY_CONFIG, build_sam_tiny

    config = {k: v for k, v in TINY_CONFIG.items() if k not in ("iou_head", "instance_dim")}
    torch.manual_seed(6)
    old = build_sam_tiny({**config, "iou_head": "token", "instance_dim": 0})
    path = save({"model": old.state_dict(), "config": config}, tmp_path / "old.pt")
    loaded = load_model("sam_tiny", checkpoint=str(path), device="cpu")
    assert hasattr(loaded.mask_decoder, "iou_prediction_head") and same_weights(loaded, old)
    assert not hasattr(loaded.image_encoder, "instance_head")
