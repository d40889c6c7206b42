"""Catalog operations on images and the quarantine (what ingest registered, what it refused and why)."""
from __future__ import annotations

from typing import Iterator

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from dataengine.catalog.database import CatalogError
from dataengine.catalog.schema import SPLITS, Image, QuarantineEntry, utcnow


class ImageRecords:
    """Mixin of `Catalog`: registered images and quarantined sources."""

    def add_image(self, image_id: str, *, content_sha256: str, key: str, width: int, height: int,
                  source_uri: str, split: str = "train", gold_set: str | None = None,
                  privacy_regions_blurred: int = 0, run_id: str | None = None) -> tuple[Image, bool]:
        """Register an image; return (the image, True) or, if the id is already registered, (it, False)."""
        if split not in SPLITS:
            raise CatalogError(f"image {image_id}: split {split!r} is not one of {', '.join(SPLITS)}")
        row = Image(image_id=image_id, content_sha256=content_sha256, key=key, width=width, height=height,
                    source_uri=source_uri, split=split, gold_set=gold_set,
                    privacy_regions_blurred=privacy_regions_blurred, run_id=run_id, ingested_at=utcnow())
        existing = self.get_image(image_id)
        if existing is not None:
            return existing, False
        try:
            with self.session() as session:
                session.add(row)
            return row, True
        except IntegrityError:  # registered concurrently by another ingest of the same bytes
            existing = self.get_image(image_id)
            if existing is None:
                raise
            return existing, False

    def get_image(self, image_id: str) -> Image | None:
        """Return the registered image or None."""
        with self.session(write=False) as session:
            return session.get(Image, image_id)

    def image_by_content(self, content_sha256: str) -> Image | None:
        """Return the image registered from a source with this SHA-256, or None."""
        with self.session(write=False) as session:
            return session.scalars(select(Image).where(Image.content_sha256 == content_sha256)).first()

    def iter_images(self, split: str | None = None, gold_set: str | None = None,
                    page_size: int = 1000) -> Iterator[Image]:
        """Yield registered images in `image_id` order, one page of `page_size` rows at a time."""
        after = ""
        while True:
            query = select(Image).where(Image.image_id > after).order_by(Image.image_id).limit(page_size)
            if split is not None:
                query = query.where(Image.split == split)
            if gold_set is not None:
                query = query.where(Image.gold_set == gold_set)
            with self.session(write=False) as session:
                page = list(session.scalars(query))
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].image_id

    def list_images(self, split: str | None = None, gold_set: str | None = None) -> list[Image]:
        """Return every registered image (filtered), in `image_id` order."""
        return list(self.iter_images(split=split, gold_set=gold_set))

    def count_images(self, split: str | None = None) -> int:
        """Return how many images are registered (in `split`, if given)."""
        query = select(func.count()).select_from(Image)
        if split is not None:
            query = query.where(Image.split == split)
        with self.session(write=False) as session:
            return int(session.scalar(query))

    def quarantine(self, source_uri: str, content_sha256: str, reason: str,
                   run_id: str | None = None) -> QuarantineEntry:
        """Record that ingest refused `source_uri` and why; the same source and content again updates the row."""
        for _ in range(3):
            try:
                with self.session() as session:
                    entry = session.scalars(select(QuarantineEntry).where(
                        QuarantineEntry.source_uri == source_uri,
                        QuarantineEntry.content_sha256 == content_sha256)).first()
                    if entry is None:
                        entry = QuarantineEntry(source_uri=source_uri, content_sha256=content_sha256)
                        session.add(entry)
                    entry.reason, entry.run_id, entry.at = reason, run_id, utcnow()
                return entry
            except IntegrityError:  # inserted concurrently: update that row instead
                continue
        raise CatalogError(f"could not record quarantine of {source_uri}")

    def list_quarantine(self, run_id: str | None = None) -> list[QuarantineEntry]:
        """Return the quarantined sources (of one run, if given), in source order."""
        query = select(QuarantineEntry).order_by(QuarantineEntry.source_uri, QuarantineEntry.id)
        if run_id is not None:
            query = query.where(QuarantineEntry.run_id == run_id)
        with self.session(write=False) as session:
            return list(session.scalars(query))
