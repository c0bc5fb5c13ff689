"""image_manifest: the validated manifest, its stable shards, and the partitions they become.

Each materialization also compares the new manifest with the previous one (``manifest/images.parquet``):
rows added, removed, or changed in path, country, coordinates or other columns are counted in the run log
and the metadata. A shard whose image set (ids + paths) changed is observed under ``shard_image_sets`` with
a new data version, which marks that partition of the shard passes stale in the UI; a shard whose rows all
left the manifest is dropped: its dynamic partition is deleted and its files are removed (its warehouse
rows go with the next warehouse build). Shard numbers are never reused, so an image that comes back later
returns to its old shard, which is then registered again and recomputed.
"""

import hashlib
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from attn_assets.catalog.manifest import ManifestError, find_manifest_files, read_manifest
from attn_assets.catalog.sharding import plan_shards, shard_sort_key
from attn_assets.path_text import path_to_text, text_to_path
from attn_assets.defs.metadata import frame_preview, table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME, shard_partitions, sync_model_partitions
from attn_assets.passes.current import SHARD_PASSES
from attn_assets.passes.recipe import image_sets_of
from attn_assets.resources import PipelineResource
from attn_assets.storage.layout import HomeLayout
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import IMAGES, MANIFEST_REJECTIONS, UNKNOWN_COUNTRY

MANIFEST_CODE_VERSION = "1"
SHARD_IMAGE_SETS_KEY = dg.AssetKey("shard_image_sets")

# Columns that are not manifest data of their own: the id, derived values, and where the row sits in its file.
_NOT_COMPARED = {"image_id", "shard_key", "abs_path", "country_name", "country_source", "source_file", "source_row"}
_COORDINATES = ("latitude", "longitude")


@dataclass
class ManifestDiff:
    """How the accepted rows changed since the previous image_manifest materialization."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)  # its shard's results are recomputed
    country: list[str] = field(default_factory=list)  # propagated to every table without recomputing
    coordinates: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # other manifest columns (e.g. drive_side)
    changes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["image_id", "change", "before", "after"]))

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "removed": len(self.removed), "path changed": len(self.path),
                "country changed": len(self.country), "coordinates changed": len(self.coordinates),
                "other columns changed": len(self.other)}

    def summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.counts().items())


def _text(values: pd.Series) -> pd.Series:
    """Values as text for comparison; every kind of missing (None, NaN, pd.NA) is ''."""
    return values.astype("string").fillna("")


def _isin(values: pd.Series, pool: pd.Series) -> np.ndarray:
    """values.isin(pool) through a hash index (pandas' isin on Arrow strings builds Python lists)."""
    return pd.Index(pool.unique()).get_indexer(values) >= 0


def _number_changed(before: pd.Series, after: pd.Series) -> np.ndarray:
    a = pd.to_numeric(before, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    b = pd.to_numeric(after, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return ~((a == b) | (np.isnan(a) & np.isnan(b)))


def diff_manifest(previous: pd.DataFrame | None, current: pd.DataFrame) -> ManifestDiff:
    """Rows added and removed (by image id) and, for rows in both, which kinds of value changed."""
    current_ids = current["image_id"].astype(str)
    if previous is None:
        return ManifestDiff(added=sorted(current_ids))
    previous_ids = previous["image_id"].astype(str)
    gone = ~_isin(previous_ids, current_ids)
    diff = ManifestDiff(added=sorted(current_ids[~_isin(current_ids, previous_ids)]), removed=sorted(previous_ids[gone]))
    both = previous.assign(image_id=previous_ids).merge(
        current.assign(image_id=current_ids), on="image_id", how="inner", suffixes=("__before", "__after"))
    previous_paths = _text(previous["path"]) if "path" in previous else pd.Series([""] * len(previous))
    changes = [{"image_id": image_id, "change": "removed", "before": path, "after": None}
               for image_id, path in zip(previous_ids[gone], previous_paths[gone])]

    def record(kind: str, mask: np.ndarray, before, after, ids: list[str]) -> None:
        """``before`` / ``after``: Series, or functions of the mask giving the values of the changed rows."""
        if not mask.any():
            return
        before = before(mask) if callable(before) else before[mask]
        after = after(mask) if callable(after) else after[mask]
        for image_id, old, new in zip(both.loc[mask, "image_id"], before, after):
            ids.append(str(image_id))
            changes.append({"image_id": str(image_id), "change": kind, "before": old, "after": new})

    def column(name: str, side: str) -> pd.Series:
        if f"{name}__{side}" in both:
            return both[f"{name}__{side}"]
        if name in both:  # a column only one side has keeps its own name in the merge
            return both[name] if (name in (current if side == "after" else previous)) else pd.Series(
                [None] * len(both), index=both.index, dtype=object)
        return pd.Series([None] * len(both), index=both.index, dtype=object)

    for name, ids in (("path", diff.path), ("country", diff.country)):
        before, after = _text(column(name, "before")), _text(column(name, "after"))
        record(name, (before != after).to_numpy(dtype=bool), before, after, ids)
    coordinates = np.zeros(len(both), dtype=bool)
    for name in _COORDINATES:
        coordinates |= _number_changed(column(name, "before"), column(name, "after"))

    def pairs(side: str):
        return lambda mask: [f"{a}, {b}" for a, b in zip(column("latitude", side)[mask], column("longitude", side)[mask])]

    record("coordinates", coordinates, pairs("before"), pairs("after"), diff.coordinates)
    others = sorted((set(previous.columns) | set(current.columns)) - _NOT_COMPARED - {"path", "country", *_COORDINATES})
    changed_columns: dict[int, list[str]] = {}  # row position -> the other columns that changed there
    for name in others:
        changed = (_text(column(name, "before")) != _text(column(name, "after"))).to_numpy(dtype=bool)
        for i in np.flatnonzero(changed):
            changed_columns.setdefault(int(i), []).append(name)
    mask = np.zeros(len(both), dtype=bool)
    mask[list(changed_columns)] = True
    names = lambda m: [", ".join(changed_columns[i]) for i in np.flatnonzero(m)]  # noqa: E731
    record("other columns", mask, names, names, diff.other)
    diff.changes = pd.DataFrame(changes, columns=["image_id", "change", "before", "after"])
    return diff


def manifest_fingerprint(manifest: str) -> str:
    """Hash of (path, size, mtime) of every file ``read_manifest`` reads for this setting (a file, a folder's
    CSV / Parquet files, or a glob: ``find_manifest_files``); cheap enough for every sensor tick. Recorded by
    image_manifest, so a later edit, addition or removal of any of those files reads as a changed manifest."""
    try:
        files = find_manifest_files(manifest)
    except ManifestError:
        files = []  # nothing to read: image_manifest itself reports why
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path_to_text(path.resolve())}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _read_assignments(path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return pd.read_parquet(path).astype({"image_id": str, "shard_key": str})


def _read_previous_images(path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return pd.read_parquet(path)


def _write_frame(frame: pd.DataFrame, path) -> None:
    write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)


def drop_shard_outputs(layout: HomeLayout, shard_key: str) -> list[str]:
    """Remove every file a shard pass wrote for ``shard_key``; returns the removed paths."""
    removed = []
    models = sorted(layout.models_dir.glob("*/shards")) if layout.models_dir.exists() else []
    outputs = [shard_pass.output(layout, shard_key) for shard_pass in SHARD_PASSES]
    outputs += [folder / f"{shard_key}.parquet" for folder in models]
    outputs += [layout.cross_model_parquet(shard_key), layout.retired_cross_model_maps(shard_key),
                layout.country_relevance_parquet(shard_key)]
    for path in outputs:
        if path.exists():
            path.unlink()
            removed.append(str(path))
    return removed


shard_image_sets = dg.AssetsDefinition(specs=[dg.AssetSpec(
    SHARD_IMAGE_SETS_KEY,
    deps=["image_manifest"],
    partitions_def=shard_partitions,
    group_name="manifest",
    owners=["team:attn-assets"],
    kinds={"parquet"},
    description=(
        "Which images each shard holds (ids + paths), observed by image_manifest: one data version per "
        "shard (a hash of its image set). A new version marks that shard's partitions of the shard passes "
        "stale; countries and coordinates are not part of it (they propagate without recomputing)."
    ),
)])


@dg.asset(
    group_name="manifest",
    kinds={"pandas", "parquet"},
    owners=["team:attn-assets"],
    tags={"domain": "manifest"},
    code_version=MANIFEST_CODE_VERSION,
    description=(
        "Validated image manifest (OSV-5M metadata or a plain image list): ids kept as text, "
        "countries resolved, every rejected row kept with its reason, each image assigned a "
        "stable shard. Registers one `shards` partition per shard."
    ),
)
def image_manifest(context: dg.AssetExecutionContext, pipeline: PipelineResource) -> dg.MaterializeResult:
    layout = pipeline.layout
    fingerprint = manifest_fingerprint(pipeline.manifest)
    result = read_manifest(text_to_path(pipeline.manifest), image_root=pipeline.image_root_path)  # escaped text too
    images = result.images

    plan = plan_shards(images["image_id"], _read_assignments(layout.shard_assignments_parquet), pipeline.shard_size)
    images = images.merge(plan.assignments, on="image_id", how="left", validate="one_to_one")
    previous = _read_previous_images(layout.images_parquet)
    diff = diff_manifest(previous, images)
    previous_sets = image_sets_of(previous) if previous is not None and "shard_key" in previous else {}
    current_sets = image_sets_of(images)
    # removed images keep their row so their shard number is never reused
    _write_frame(plan.all_assignments, layout.shard_assignments_parquet)
    _write_frame(images, layout.images_parquet)
    _write_frame(result.rejections.rename(columns={"column": "column_name"}), layout.rejections_parquet)

    shard_keys = sorted(images["shard_key"].unique(), key=shard_sort_key)
    registered = set(context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))
    new_keys = [key for key in shard_keys if key not in registered]
    if new_keys:
        context.instance.add_dynamic_partitions(SHARD_PARTITIONS_NAME, new_keys)
    # a shard whose rows all left the manifest: its partition and files go (see the module doc)
    dropped = sorted(registered - set(shard_keys), key=shard_sort_key)
    for key in dropped:
        removed_files = drop_shard_outputs(layout, key)
        context.instance.delete_dynamic_partition(SHARD_PARTITIONS_NAME, key)
        context.log.warning("%s: every image left the manifest; partition deleted, %d files removed", key,
                            len(removed_files))
    sync_model_partitions(context.instance, layout.models_dir)
    # a new data version per shard whose image set changed: those partitions show as stale in the UI
    changed_sets = [key for key in shard_keys if previous_sets.get(key) != current_sets[key]]
    sizes = images["shard_key"].value_counts()
    for key in changed_sets:
        context.log_event(dg.AssetObservation(
            asset_key=SHARD_IMAGE_SETS_KEY, partition=key, tags={DATA_VERSION_TAG: current_sets[key]},
            metadata={"images": dg.MetadataValue.int(int(sizes[key]))}))
    stale_shards = [key for key in changed_sets if key in previous_sets]
    context.log.info(
        "%d images in %d shards (%d new), %d rejected rows, %d images left the manifest", len(images),
        len(shard_keys), len(new_keys), len(result.rejections), len(plan.removed),
    )
    context.log.info(
        "Manifest rows since the last image_manifest: %s. Shards to recompute (image set changed): %s; "
        "shards dropped (no rows left): %s. Country and coordinate changes reach every table without recomputing.",
        diff.summary(), ", ".join(stale_shards) or "none", ", ".join(dropped) or "none",
    )

    for note in result.notes:  # kept rows: cells that could not be typed, ids found in two places
        context.log.warning("%s", note)

    countries = images["country"].fillna(UNKNOWN_COUNTRY).value_counts()
    return dg.MaterializeResult(
        metadata={
            **table_metadata(IMAGES, len(images), images[[c for c in IMAGES.column_names if c in images]]),
            "rejected_rows": dg.MetadataValue.int(len(result.rejections)),
            "rejections_preview": frame_preview(result.rejections),
            "images_in_zip_archives": dg.MetadataValue.int(int(images["member"].notna().sum())),
            "ids_found_twice": dg.MetadataValue.int(result.ids_found_twice),
            "ids_found_twice_example": dg.MetadataValue.text(result.ids_found_twice_example or "none"),
            "manifest_notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in result.notes) or "none"),
            "shards": dg.MetadataValue.int(len(shard_keys)),
            "new_shards": dg.MetadataValue.text(", ".join(new_keys) or "none"),
            "countries": dg.MetadataValue.int(int(images["country"].nunique())),
            "removed_images": dg.MetadataValue.int(len(plan.removed)),
            "rows_added": dg.MetadataValue.int(len(diff.added)),
            "rows_removed": dg.MetadataValue.int(len(diff.removed)),
            "rows_changed_path": dg.MetadataValue.int(len(diff.path)),
            "rows_changed_country": dg.MetadataValue.int(len(diff.country)),
            "rows_changed_coordinates": dg.MetadataValue.int(len(diff.coordinates)),
            "rows_changed_other": dg.MetadataValue.int(len(diff.other)),
            "changes_preview": frame_preview(diff.changes, rows=20),
            "shards_image_set_changed": dg.MetadataValue.text(", ".join(stale_shards) or "none"),
            "shards_dropped": dg.MetadataValue.text(", ".join(dropped) or "none"),
            "images_per_country": dg.MetadataValue.md(countries.rename("images").to_frame().head(20).to_markdown()),
            "manifest": dg.MetadataValue.text(path_to_text(pipeline.manifest)),
            "manifest_fingerprint": dg.MetadataValue.text(fingerprint),
            "rejection_schema": dg.MetadataValue.table_schema(
                dg.TableSchema(columns=[dg.TableColumn(c) for c in MANIFEST_REJECTIONS.column_names])
            ),
            "path": dg.MetadataValue.path(str(layout.images_parquet)),
        }
    )


@dg.asset_check(asset=image_manifest, description="Warns when manifest rows were rejected (see manifest_rejections).")
def manifest_rejection_count(pipeline: PipelineResource) -> dg.AssetCheckResult:
    path = pipeline.layout.rejections_parquet
    rejections = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["reason"])
    reasons = rejections["reason"].str.split(":").str[0].value_counts().head(10) if len(rejections) else pd.Series()
    return dg.AssetCheckResult(
        passed=len(rejections) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rejected_rows": dg.MetadataValue.int(len(rejections)),
            "top_reasons": dg.MetadataValue.md(reasons.to_frame().to_markdown() if len(reasons) else "_none_"),
        },
    )
