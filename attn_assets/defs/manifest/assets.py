"""image_manifest: the validated manifest, its stable shards, and the partitions they become."""


import dagster as dg
import pandas as pd
import pyarrow as pa

from attn_assets.catalog.manifest import read_manifest
from attn_assets.catalog.sharding import plan_shards
from attn_assets.defs.metadata import frame_preview, table_metadata
from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
from attn_assets.defs.manifest.sources import manifest_fingerprint
from attn_assets.resources import PipelineResource
from attn_assets.storage.parquet import write_table_atomic
from attn_assets.storage.schema import IMAGES, MANIFEST_REJECTIONS, UNKNOWN_COUNTRY

MANIFEST_CODE_VERSION = "1"


def _read_assignments(path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    return pd.read_parquet(path).astype({"image_id": str, "shard_key": str})


def _write_frame(frame: pd.DataFrame, path) -> None:
    write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), path)


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
    result = read_manifest(pipeline.manifest, image_root=pipeline.image_root_path)
    images = result.images

    plan = plan_shards(images["image_id"], _read_assignments(layout.shard_assignments_parquet), pipeline.shard_size)
    images = images.merge(plan.assignments, on="image_id", how="left", validate="one_to_one")
    # removed images keep their row so their shard number is never reused
    _write_frame(plan.all_assignments, layout.shard_assignments_parquet)
    _write_frame(images, layout.images_parquet)
    _write_frame(result.rejections.rename(columns={"column": "column_name"}), layout.rejections_parquet)

    shard_keys = sorted(images["shard_key"].unique())
    registered = set(context.instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME))
    new_keys = [key for key in shard_keys if key not in registered]
    if new_keys:
        context.instance.add_dynamic_partitions(SHARD_PARTITIONS_NAME, new_keys)
    context.log.info(
        "%d images in %d shards (%d new), %d rejected rows, %d images left the manifest", len(images),
        len(shard_keys), len(new_keys), len(result.rejections), len(plan.removed),
    )

    countries = images["country"].fillna(UNKNOWN_COUNTRY).value_counts()
    return dg.MaterializeResult(
        metadata={
            **table_metadata(IMAGES, len(images), images[[c for c in IMAGES.column_names if c in images]]),
            "rejected_rows": dg.MetadataValue.int(len(result.rejections)),
            "rejections_preview": frame_preview(result.rejections),
            "shards": dg.MetadataValue.int(len(shard_keys)),
            "new_shards": dg.MetadataValue.text(", ".join(new_keys) or "none"),
            "countries": dg.MetadataValue.int(int(images["country"].nunique())),
            "removed_images": dg.MetadataValue.int(len(plan.removed)),
            "images_per_country": dg.MetadataValue.md(countries.rename("images").to_frame().head(20).to_markdown()),
            "manifest": dg.MetadataValue.text(pipeline.manifest),
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
