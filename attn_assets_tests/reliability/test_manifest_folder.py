"""A manifest given as a folder: editing a CSV inside it is a manifest change for the sensor and for
`attn-assets materialize` (the fingerprint covers the files the reader reads, not the folder's own stat)."""

from __future__ import annotations

import dagster as dg

from attn_assets.orchestration import materialize_all


def _sensor(instance):
    from attn_assets.defs.sensors import manifest_sensor
    from attn_assets.resources import resources_from_env

    return manifest_sensor(dg.build_sensor_context(instance=instance, resources=resources_from_env()))


def test_editing_a_csv_inside_a_folder_manifest_is_seen(plain_env, plain_instance, monkeypatch):
    folder = plain_env.tmp / "manifests"
    folder.mkdir()
    for i in range(3):
        plain_env.scene(f"img-{i}.jpg", seed=i)
    first = plain_env.write_manifest([{"image_id": "img-0", "path": "img-0.jpg", "country": "FR"},
                                      {"image_id": "img-1", "path": "img-1.jpg", "country": "DE"}],
                                     folder / "part-1.csv")
    monkeypatch.setenv("ATTN_ASSETS_MANIFEST", str(folder))

    summary = materialize_all(instance=plain_instance)
    assert summary.ok, "\n".join(summary.lines)
    assert isinstance(_sensor(plain_instance), dg.SkipReason)  # nothing changed since

    folder_mtime = folder.stat().st_mtime_ns
    plain_env.write_manifest([{"image_id": "img-0", "path": "img-0.jpg", "country": "FR"},
                              {"image_id": "img-1", "path": "img-1.jpg", "country": "DE"},
                              {"image_id": "img-2", "path": "img-2.jpg", "country": "JP"}], first)
    assert folder.stat().st_mtime_ns == folder_mtime  # edited in place: the folder's own stat is unchanged

    request = _sensor(plain_instance)
    assert isinstance(request, dg.RunRequest), request
    assert request.asset_selection == [dg.AssetKey("image_manifest")]

    again = materialize_all(instance=plain_instance)
    assert again.ok, "\n".join(again.lines)
    assert any(line.startswith("image_manifest: ok") for line in again.lines), again.lines
    assert "image_manifest: up to date" not in again.lines
    assert isinstance(_sensor(plain_instance), dg.SkipReason)
