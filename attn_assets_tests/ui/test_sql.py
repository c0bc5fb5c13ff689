"""`attn-assets sql` (aligned table, --csv, --json, read-only, clear errors) and the DuckDB CLI.

The DuckDB CLI comes from PyPI's duckdb-cli (pinned 1.5.6, the newest published; it installs
`duckdb` beside the venv's python). DuckDB 1.5.x reads storage versions up to v1.5; Python
duckdb 2.0.1 writes v2.0 files unless a file is created with storage_compatibility_version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from attn_assets import cli
from attn_assets.storage.warehouse import Warehouse

DUCKDB_CLI_VERSION = "v1.5.6"


def duckdb_cli() -> str:
    found = shutil.which("duckdb", path=str(Path(sys.executable).parent)) or shutil.which("duckdb")
    if found is None:
        pytest.skip("DuckDB CLI not installed: pip install duckdb-cli==1.5.6")
    return found


@pytest.fixture
def small_warehouse(tmp_path) -> Path:
    """A warehouse file written through Warehouse.writer(), plus a small table to query."""
    path = tmp_path / "warehouse" / "attention.duckdb"
    with Warehouse(path).writer() as con:
        con.execute(
            "CREATE TABLE demo AS SELECT * FROM (VALUES ('NA', 'Namibia', 2, 3.25), ('FR', 'France', 10, 0.5), "
            "('JP', 'Japan', 7, NULL)) t(country, country_name, images, entropy)"
        )
    return path


def run_sql(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["sql", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_table_output_is_aligned(small_warehouse, capsys):
    code, out, err = run_sql(capsys, "--database", str(small_warehouse),
                             "SELECT country, country_name, images, entropy FROM demo ORDER BY images DESC")
    assert code == 0, err
    lines = out.rstrip("\n").split("\n")
    assert lines[0].split() == ["country", "country_name", "images", "entropy"]
    assert [line.split()[0] for line in lines[1:]] == ["FR", "JP", "NA"]  # "NA" stays Namibia, not missing
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header: columns line up
    header_end = lines[0].index("images") + len("images")
    assert all(line[header_end - 1] != " " for line in lines[1:])  # numbers right-aligned under their header


def test_empty_result_says_so(small_warehouse, capsys):
    code, out, _ = run_sql(capsys, "--database", str(small_warehouse), "SELECT * FROM demo WHERE images < 0")
    assert code == 0 and out.strip() == "(no rows)"


def test_csv_output(small_warehouse, capsys):
    code, out, _ = run_sql(capsys, "--database", str(small_warehouse), "--csv",
                           "SELECT country, images, entropy FROM demo ORDER BY country")
    assert code == 0
    assert out.splitlines() == ["country,images,entropy", "FR,10,0.5", "JP,7,", "NA,2,3.25"]


def test_json_output(small_warehouse, capsys):
    code, out, _ = run_sql(capsys, "--database", str(small_warehouse), "--json",
                           "SELECT country, images, entropy FROM demo ORDER BY country")
    assert code == 0
    assert json.loads(out) == [
        {"country": "FR", "images": 10, "entropy": 0.5},
        {"country": "JP", "images": 7, "entropy": None},
        {"country": "NA", "images": 2, "entropy": 3.25},
    ]


@pytest.mark.parametrize("statement", [
    "CREATE TABLE evil AS SELECT 1 AS x",
    "DELETE FROM demo",
    "INSERT INTO demo VALUES ('XX', 'Nowhere', 1, 1.0)",
    "DROP TABLE demo",
])
def test_writes_fail_clearly_and_change_nothing(small_warehouse, capsys, statement):
    code, out, err = run_sql(capsys, "--database", str(small_warehouse), statement)
    assert code == 1 and out == ""
    assert err.startswith("attn-assets: error: query failed:")
    assert "read-only" in err
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM demo").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'evil'").fetchone()[0] == 0


def test_missing_warehouse_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTN_ASSETS_HOME", str(tmp_path / "home"))
    code, out, err = run_sql(capsys, "SELECT 1")
    assert code == 1 and out == ""
    expected = tmp_path / "home" / "warehouse" / "attention.duckdb"
    assert f"No warehouse at {expected}" in err and "attn-assets materialize" in err
    assert "Traceback" not in err
    assert not expected.exists()  # a read never creates the file


def test_bad_sql_is_a_clear_error(small_warehouse, capsys):
    code, _, err = run_sql(capsys, "--database", str(small_warehouse), "SELECT nope FROM demo")
    assert code == 1
    assert err.startswith("attn-assets: error: query failed:") and "nope" in err


class HoldOpen:
    """Another process that keeps the DuckDB file open (as a materialization or a notebook would)."""

    def __init__(self, path: Path, read_only: bool):
        code = (
            "import duckdb, sys, time\n"
            f"con = duckdb.connect({str(path)!r}, read_only={read_only})\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
        )
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.stdin.close()  # the child exits when its stdin closes
        self.process.wait(timeout=30)


def test_while_a_writer_holds_the_file_sql_waits_then_fails_clearly(small_warehouse, capsys):
    with HoldOpen(small_warehouse, read_only=False):
        code, out, err = run_sql(capsys, "--database", str(small_warehouse), "--wait", "1", "SELECT 1")
    assert code == 1 and out == ""
    assert "locked by another process" in err and "Traceback" not in err
    code, out, _ = run_sql(capsys, "--database", str(small_warehouse), "--csv", "SELECT count(*) AS n FROM demo")
    assert code == 0 and out.split() == ["n", "3"]  # fine again once the writer is gone


def test_while_a_reader_holds_the_file_a_writer_waits(small_warehouse):
    """The documented limit: a reader (sql, a DuckDB CLI, a notebook) blocks every write until it closes."""
    from attn_assets.storage.warehouse import WarehouseBusyError

    with HoldOpen(small_warehouse, read_only=True):
        with pytest.raises(WarehouseBusyError, match="stayed locked by another process"):
            with Warehouse(small_warehouse, wait_timeout_s=1.0, retry_interval_s=0.2).writer():
                pass
    with Warehouse(small_warehouse, wait_timeout_s=5.0).writer() as con:
        assert con.execute("SELECT count(*) FROM demo").fetchone()[0] == 3


# -- the DuckDB CLI ---------------------------------------------------------------------


def test_duckdb_cli_is_the_pinned_version():
    result = subprocess.run([duckdb_cli(), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith(DUCKDB_CLI_VERSION), result


def test_duckdb_cli_reads_a_file_python_duckdb_writes_in_compatible_storage(tmp_path):
    path = tmp_path / "compat.duckdb"
    with duckdb.connect(str(path), config={"storage_compatibility_version": "v1.5.0"}) as con:
        con.execute("CREATE TABLE attention_statistics AS SELECT range AS i, 'NA' AS country FROM range(7)")
    result = subprocess.run(
        [duckdb_cli(), "-readonly", "-csv", str(path), "-c",
         "SELECT count(*) AS n, min(country) AS c FROM attention_statistics"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["n,c", "7,NA"]


def _storage_version(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as con:
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE NOT internal AND database_name NOT IN ('temp', 'system')").fetchone()[0]
    return tags.get("storage_version", "")


@pytest.mark.slow
def test_duckdb_cli_reads_the_pipeline_warehouse(pipeline_env, instance):
    """The warehouse as the pipeline builds it (manifest, every shard, attention_warehouse)."""
    from attn_assets.definitions import build_definitions
    from attn_assets.defs.partitions import SHARD_PARTITIONS_NAME
    from attn_assets.storage.layout import HomeLayout
    import dagster as dg

    defs = build_definitions()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    assert defs.resolve_job_def("manifest_job").execute_in_process(instance=instance, run_config=quiet).success
    for key in instance.get_dynamic_partitions(SHARD_PARTITIONS_NAME):
        assert defs.resolve_job_def("attention_statistics_job").execute_in_process(
            instance=instance, partition_key=key, run_config=quiet).success
    assert defs.resolve_job_def("downstream_job").execute_in_process(
        instance=instance, run_config=quiet, asset_selection=[dg.AssetKey("attention_warehouse")]).success

    path = HomeLayout(pipeline_env.home).warehouse_path
    expected = Warehouse(path).query("SELECT count(*) AS n FROM attention_statistics")["n"].iloc[0]
    assert expected == len(pipeline_env.image_ids)
    version = _storage_version(path)
    # the newest DuckDB CLI on PyPI (duckdb-cli 1.5.6) cannot read storage v2 files
    assert not version.startswith("v2"), f"{path} has storage {version}; Warehouse must write v1.5"
    result = subprocess.run(
        [duckdb_cli(), "-readonly", str(path), "-c", "SELECT count(*) FROM attention_statistics"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"│ {expected} │" in result.stdout.replace("  ", " ").replace("  ", " ") or str(expected) in result.stdout
    csv = subprocess.run(
        [duckdb_cli(), "-readonly", "-csv", str(path), "-c",
         "SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM attention_statistics"],
        capture_output=True, text=True, timeout=60,
    )
    assert csv.stdout.split() == ["n,d", f"{expected},{expected}"]
