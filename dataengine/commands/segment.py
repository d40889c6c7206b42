"""`dataengine segment`: automatic masks for images, one SA-1B JSON per image."""
from __future__ import annotations


def register(subparsers) -> None:
    """Add the `segment` subcommand."""
    p = subparsers.add_parser(
        "segment", help="generate masks automatically and write one SA-1B JSON per image",
        description="Run the automatic mask generator on images (paths, file:// or s3:// URIs) and write "
                    "OUT/<name>.json in the SA-1B per-image format.")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_URI")
    p.add_argument("--model", default="sam_tiny", help="sam_tiny (default), sam_vit_b, sam_vit_l, sam_vit_h, or a "
                                                      "SAM 2 name (sam2.1_hiera_tiny|small|base_plus|large, "
                                                      "sam2_hiera_*)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint URI or path (default for sam_tiny: the shipped sam_tiny_v0.pt)")
    p.add_argument("--preset", default="official", help="generator preset: official (default: the official "
                                                        "generator of the model's family) or sa1b")
    p.add_argument("--points-per-side", type=int, default=None, help="override the preset's grid size")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run_segment)


def run_segment(args) -> int:
    """Segment every image; print one line per image; return 1 if any image failed, else 0."""
    import time
    from pathlib import Path, PurePosixPath
    from urllib.parse import urlparse

    from dataengine.config import shipped_model_path
    from dataengine.formats.sa1b import record_from_masks, validate_sa1b_record, write_record
    from dataengine.images import ImageRejected, decode_image
    from dataengine.model import load_model
    from dataengine.pipeline.automatic import mask_generator
    from dataengine.storage import NotFound, read_uri

    checkpoint = args.checkpoint
    if checkpoint is None and args.model == "sam_tiny":
        if shipped_model_path().exists():
            checkpoint = str(shipped_model_path())
        else:
            print(f"warning: {shipped_model_path()} not found; sam_tiny runs with random weights")
    model = load_model(args.model, checkpoint=checkpoint, device=args.device)
    overrides = {"output_mode": "coco_rle"}
    if args.points_per_side:
        overrides["points_per_side"] = args.points_per_side
    generator = mask_generator(model, preset=args.preset, **overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for source in args.images:
        name = PurePosixPath(urlparse(source).path if "://" in source else source).name
        stem = name.rsplit(".", 1)[0] or name
        started = time.perf_counter()
        try:
            image = decode_image(read_uri(source)).pixels
        except (ImageRejected, NotFound, OSError, ValueError) as exc:
            print(f"{source}: skipped ({exc})")
            failures += 1
            continue
        masks = generator.generate(image)
        record = record_from_masks(stem, image.shape[1], image.shape[0], masks, file_name=name)
        validate_sa1b_record(record, image_size=image.shape[:2])
        write_record(out / f"{stem}.json", record)
        print(f"{source}: {len(masks)} masks in {time.perf_counter() - started:.2f} s -> {out / (stem + '.json')}")
    return 1 if failures else 0
