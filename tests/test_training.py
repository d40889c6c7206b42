"""Training: a short run lowers the held-out loss; runs are deterministic and resume exactly; checkpoints load."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dataengine.model import training  # noqa: E402
from dataengine.model.training import SyntheticScenes, TrainSettings, train  # noqa: E402

SMALL = {"img_size": 64, "stride": 8, "embed_dim": 32, "widths": [16, 16, 32, 32], "decoder_depth": 1,
         "decoder_heads": 2, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 32}


def _settings(**overrides):
    base = dict(steps=6, images_per_step=2, masks_per_image=4, rounds=3, lr=3e-3, warmup_steps=1,
                checkpoint_every=3, num_workers=0, threads=1, heldout_images=4)
    base.update(overrides)
    return TrainSettings(**base)


def _model():
    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(0)
    return build_sam_tiny(SMALL)


def _heldout():
    return [SyntheticScenes(64, seed_base=5_000)[i] for i in range(4)]


def test_short_training_run_lowers_the_heldout_loss(tmp_path):
    sam, settings = _model(), _settings(steps=40, checkpoint_every=40)
    before = training.heldout_loss(sam, _heldout(), settings, "cpu")["heldout_loss"]
    result = train(sam, SyntheticScenes(64), settings, str(tmp_path / "state.pt"), heldout=_heldout(),
                   log=lambda m: None)
    assert result["heldout_loss"] < before - 0.05, (before, result["heldout_loss"])


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    def weights(sam):
        return torch.cat([p.detach().flatten() for p in sam.state_dict().values() if p.is_floating_point()])

    a = _model()
    train(a, SyntheticScenes(64), _settings(), str(tmp_path / "a.pt"), log=lambda m: None)
    b = _model()
    train(b, SyntheticScenes(64), _settings(), str(tmp_path / "b.pt"), log=lambda m: None)
    assert torch.equal(weights(a), weights(b))
    # interrupted after its first checkpoint (step 3), then resumed from it
    c = _model()
    train(c, SyntheticScenes(64), _settings(steps=6, time_limit_s=1e-9), str(tmp_path / "c.pt"), log=lambda m: None)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 1
    c = _model()
    train(c, SyntheticScenes(64), _settings(), str(tmp_path / "c.pt"), log=lambda m: None)
    assert torch.equal(weights(a), weights(c))


def test_checkpoint_loads_strictly_through_load_model(tmp_path):
    from dataengine.model import load_model

    sam = _model()
    card = {"name": "sam_tiny", "version": "test"}
    training.write_checkpoint(str(tmp_path / "model.pt"), sam, SMALL, card)
    loaded = load_model("sam_tiny", checkpoint=str(tmp_path / "model.pt"), device="cpu")
    for key, value in sam.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert json.loads((tmp_path / "card.json").read_text()) == card


def test_train_from_a_snapshot_of_store_records_writes_checkpoint_and_card(tmp_path):
    from dataengine.storage import FileStore
    from dataengine.synth import write_scenes

    store = FileStore(tmp_path / "store")
    gold = tmp_path / "gold"
    write_scenes(gold, 4, seed=20)
    keys = []
    for path in sorted(gold.glob("*.json")):
        image_id = path.stem
        store.put_file(f"images/{image_id}.jpg", gold / f"{image_id}.jpg")
        store.put_file(f"gold/synthetic/{image_id}.json", path)
        keys.append(f"gold/synthetic/{image_id}.json")
    store.put_json("snapshots/s1.json", keys)
    parent = tmp_path / "parent.pt"
    training.write_checkpoint(str(parent), _model(), SMALL, {"name": "sam_tiny", "version": "p"})
    card = training.train_from_snapshot("sam_tiny", str(tmp_path / "store" / "snapshots" / "s1.json"),
                                        str(tmp_path / "out" / "model.pt"), parent=str(parent),
                                        settings=_settings(steps=2, loss="focal_dice"), store=store,
                                        state_path=str(tmp_path / "state.pt"), log=lambda m: None)
    assert card["parent"] == str(parent) and card["config"]["img_size"] == 64
    assert card["data"]["train_records"] + card["data"]["heldout_records"] == 4
    assert card["data"]["rehearsal_scenes"] == 0
    assert (tmp_path / "out" / "card.json").exists() and (tmp_path / "out" / "model.pt").exists()
    # with rehearsal, half of an epoch's images are the bootstrap's synthetic scenes
    card = training.train_from_snapshot("sam_tiny", str(tmp_path / "store" / "snapshots" / "s1.json"),
                                        str(tmp_path / "out2" / "model.pt"), parent=str(parent),
                                        settings=_settings(steps=2, rehearsal_share=0.5), store=store,
                                        state_path=str(tmp_path / "state2.pt"), log=lambda m: None)
    assert card["data"]["rehearsal_scenes"] == card["data"]["train_records"] > 0


def test_rehearsal_mixes_replayed_scenes_into_each_epoch():
    records = [training.Sample(image=None, masks=None, name=f"record{i}") for i in range(6)]
    mixed = training.WithRehearsal(records, SyntheticScenes(64), share=0.25)
    assert len(mixed) == 8                              # 6 records are 75% of the epoch
    assert [mixed[i].name for i in range(6)] == [r.name for r in records]
    assert [mixed[i].name for i in (6, 7)] == [f"synth:{training.SYNTH_TRAIN_SEED_BASE + i}" for i in (0, 1)]
    assert max(mixed[7].image.shape[:2]) == 64          # rendered at the model frame
    with pytest.raises(ValueError, match="rehearsal share"):
        training.WithRehearsal(records, SyntheticScenes(64), share=1.0)


def test_a_snapshot_that_is_not_a_list_of_records_is_refused(tmp_path):
    from dataengine.storage import FileStore

    (tmp_path / "snap.json").write_text(json.dumps({"records": ["images/a.jpg"]}))
    with pytest.raises(ValueError, match="snap.json"):
        training.read_snapshot(FileStore(tmp_path), str(tmp_path / "snap.json"))


def test_click_maps_draw_the_points_of_a_prompt_and_not_its_box_placeholder():
    import numpy as np

    sam = _model()
    scenes = [SyntheticScenes(64)[i] for i in range(2)]
    for box_probability, rounds, drawn in ((1.0, 1, False), (1.0, 2, True), (0.0, 1, True)):
        sam.zero_grad(set_to_none=True)
        settings = _settings(box_probability=box_probability, rounds=rounds)
        batch = training.collate(scenes, sam, 4, np.random.default_rng(0), "cpu")
        loss, _ = training.interactive_loss(sam, batch, settings, [0, 1])
        loss.backward()
        grad = sam.prompt_encoder.click_embed.weight.grad
        assert (grad is not None and float(grad.abs().sum()) > 0) == drawn, (box_probability, rounds)


def test_shipped_checkpoint_loads_strictly_and_beats_an_untrained_model():
    from dataengine.model import load_model
    from dataengine.model.tiny import TINY_CONFIG, build_sam_tiny

    path = training.shipped_checkpoint_path()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(payload["config"]) <= set(TINY_CONFIG) and payload["card"]["name"] == "sam_tiny"
    assert payload["card"]["version"] == "v0" and payload["card"]["training"]["phases"][0]["steps_done"] > 0
    shipped = load_model("sam_tiny", checkpoint=str(path), device="cpu")
    torch.manual_seed(0)
    untrained = build_sam_tiny()
    scenes = [SyntheticScenes(TINY_CONFIG["img_size"], seed_base=7_000)[i] for i in range(2)]
    settings = TrainSettings(images_per_step=2, masks_per_image=8, rounds=2, heldout_images=2)
    trained_iou = training.heldout_loss(shipped, scenes, settings, "cpu")["heldout_iou_by_round"]
    untrained_iou = training.heldout_loss(untrained, scenes, settings, "cpu")["heldout_iou_by_round"]
    assert trained_iou[0] > untrained_iou[0] + 0.1 and trained_iou[1] > trained_iou[0]


def test_a_time_budget_is_split_into_steps_that_fit_it():
    steps, first_only = training.plan_steps(3600, 1.4, 4.0, 0.2)
    assert first_only == round(steps * 0.2)
    spent = first_only * 1.4 + (steps - first_only) * 4.0
    assert spent <= 3600 * (1 - training.BUDGET_MARGIN) < spent + 4.0      # as many steps as fit, no more
    faster, _ = training.plan_steps(3600, 0.7, 2.0, 0.2)
    assert faster == pytest.approx(2 * steps, abs=2)                        # twice as fast: twice the steps
    assert training.plan_steps(3600, 0.7, 2.0, 0.2, max_steps=1800) == (1800, 360)   # a budget only shortens
    with pytest.raises(ValueError, match="fits no step"):
        training.plan_steps(1.0, 1.0, 2.0, 0.2)


def test_bootstrap_within_a_time_budget_measures_plans_and_resumes_with_its_plan(tmp_path):
    """`dataengine bootstrap-model --time-budget-minutes`: the step times are measured on this machine, the run
    takes the steps that fit, and a resumed run keeps that plan instead of measuring again."""
    phase = _settings(steps=40, first_click_only_steps=10, rounds=3, checkpoint_every=2, heldout_images=2)
    out, state = tmp_path / "v0.pt", str(tmp_path / "v0.state")
    lines = []
    first = training.bootstrap(str(out), state, log=lines.append, time_budget_s=10.0, time_limit_s=0.01,
                               config=SMALL, phases=[phase])
    plan = json.loads((tmp_path / "v0.state.plan.json").read_text())
    assert first["training"]["time_budget"] == plan and not first["training"]["complete"]
    expected = training.plan_steps(10.0 - plan["measuring_s"], plan["first_step_s"], plan["full_step_s"], 10 / 40,
                                   max_steps=40)
    assert (plan["steps"], plan["first_click_only_steps"]) == expected and plan["recipe_steps"] == 40
    assert first["training"]["phases"][0]["steps_done"] < plan["steps"]      # stopped by the time limit
    lines.clear()
    second = training.bootstrap(str(out), state, log=lines.append, time_budget_s=10.0, config=SMALL,
                                phases=[phase])
    assert any("resuming the planned" in line for line in lines)
    assert not any(line.startswith("time budget 0.2 min") for line in lines)   # not measured again
    assert second["training"]["complete"] and second["training"]["time_budget"] == plan
    assert second["training"]["phases"][0]["steps_done"] == plan["steps"]
    from dataengine.model import load_model

    again = load_model("sam_tiny", checkpoint=str(out), device="cpu")
    assert again.image_encoder.img_size == 64
    # the recipe's architecture (BOOTSTRAP_CONFIG): SAM's token IoU head, though TINY_CONFIG's default is mask-aware
    assert second["config"]["iou_head"] == "token" and hasattr(again.mask_decoder, "iou_prediction_head")


def test_discriminative_loss_is_zero_for_separated_objects_and_positive_for_mixed_ones():
    from dataengine.model.training.losses import discriminative_loss

    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 4:] = 1
    labels[0, 0, 0] = -1                                                  # ignored pixel
    separated = torch.zeros(1, 2, 8, 8)
    separated[0, 0, :, 4:] = 4.0                                          # the two means 4 apart (> 2 * 1.5)
    mixed = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    assert float(discriminative_loss(separated, labels)) < 0.01
    assert float(discriminative_loss(mixed, labels)) > 1.0
    assert float(discriminative_loss(mixed, torch.zeros(1, 8, 8, dtype=torch.long))) == 0.0   # one label only


def test_instance_head_gets_gradients_from_scenes_with_whole_object_maps():
    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(0)
    sam = build_sam_tiny({**SMALL, "instance_dim": 4})
    sam.train()
    scenes = [SyntheticScenes(64, seed_base=7_000, photo_share=0.5)[i] for i in range(2)]
    batch = training.collate(scenes, sam, 4, np.random.default_rng(0), "cpu")
    assert batch.instances is not None and int(batch.instances.max()) >= 1
    settings = _settings(rounds=1, instance_weight=0.5)
    loss, stats = training.interactive_loss(sam, batch, settings, [0, 1])
    loss.backward()
    assert stats["instance_loss"] > 0
    assert sam.image_encoder.instance_head.proj[2].weight.grad.abs().sum() > 0


def test_choice_loss_adds_a_term_that_reaches_the_iou_head():
    from dataengine.model.tiny import build_sam_tiny

    torch.manual_seed(0)
    sam = build_sam_tiny({**SMALL, "iou_head": "token"})     # the recipe's head
    sam.train()
    scenes = [SyntheticScenes(64, seed_base=7_000)[i] for i in range(2)]
    batch = training.collate(scenes, sam, 4, np.random.default_rng(0), "cpu")
    plain, plain_stats = training.interactive_loss(sam, batch, _settings(rounds=1), [0, 1])
    ranked, ranked_stats = training.interactive_loss(sam, batch, _settings(rounds=1, iou_rank_weight=1.0), [0, 1])
    assert float(ranked.detach()) > float(plain.detach()) and ranked_stats["iou_loss"] > plain_stats["iou_loss"]
    ranked.backward()
    assert sam.mask_decoder.iou_prediction_head.layers[-1].weight.grad.abs().sum() > 0


def test_moving_average_and_trained_minutes_survive_a_resume_and_mark_the_curve(tmp_path):
    state = str(tmp_path / "state.pt")
    settings = _settings(steps=4, ema_decay=0.9, curve_minutes=[0.0001])   # a curve point after the first step
    data = SyntheticScenes(64, seed_base=3_000)
    sam = _model()
    first = train(sam, data, replace_steps(settings, 2), state)
    saved = torch.load(state, weights_only=True)
    assert "ema" in saved and saved["trained_s"] > 0
    assert (tmp_path / "state.pt.curve-000min.pt").exists()
    raw = saved["model"]
    assert any(not torch.equal(raw[k], saved["ema"][k]) for k in raw if raw[k].dtype.is_floating_point)
    assert all(torch.equal(v, saved["ema"][k]) for k, v in sam.state_dict().items())   # the model ends averaged
    resumed = train(_model(), data, settings, state)
    assert resumed["steps_done"] == 4 and resumed["trained_seconds"] > first["trained_seconds"]


def replace_steps(settings, steps):
    from dataclasses import replace

    return replace(settings, steps=steps)


def test_a_gpu_bootstrap_takes_a_larger_batch_and_the_cpu_the_recipe_as_it_is():
    from dataengine.model.device import autocast, train_batch_factor

    assert train_batch_factor("cpu") == 1 and train_batch_factor("cuda") == 8
    assert type(autocast("cpu")).__name__ == "nullcontext"                 # fp32 on the CPU, exact


def test_the_recipe_a_checkpoints_card_records_trains_again(tmp_path):
    """`bootstrap-model --recipe-of`: the shipped v0's card gives back its architecture (token IoU head, no
    instance head, though TINY_CONFIG has both now) and its settings; a short run of it builds that architecture;
    a checkpoint whose card records no settings is refused."""
    from dataclasses import replace

    from dataengine.model import load_model
    from dataengine.model.tiny import build_sam_tiny

    shipped = training.shipped_checkpoint_path()
    card = torch.load(shipped, map_location="cpu", weights_only=True)["card"]
    config, phases = training.recipe_of(str(shipped))
    assert config["iou_head"] == "token" and config["instance_dim"] == 0
    assert [p.steps for p in phases] == [s["steps"] for s in card["settings"]]
    assert phases[0].masks_per_image == card["settings"][0]["masks_per_image"]
    assert phases[0].photo_share == 0.0 and phases[0].instance_weight == 0.0 and phases[0].ema_decay == 0.0

    out = tmp_path / "again.pt"
    short = [replace(p, heldout_images=2, num_workers=0, threads=1) for p in phases]
    again = training.bootstrap(str(out), str(tmp_path / "state.pt"), log=lambda m: None, steps=2, config=config,
                               phases=short)
    assert again["config"]["iou_head"] == "token" and again["training"]["phases"][0]["steps_done"] == 2
    assert hasattr(load_model("sam_tiny", checkpoint=str(out), device="cpu").mask_decoder, "iou_prediction_head")

    bare = tmp_path / "bare.pt"
    training.write_checkpoint(str(bare), build_sam_tiny(SMALL), SMALL, {"name": "sam_tiny"})
    with pytest.raises(ValueError, match="records no training settings"):
        training.recipe_of(str(bare))
