"""benchmarks/gpu_check.py --cpu-smoke runs here, in a clean process, so the GPU check cannot rot.

The check must run where only torch, torchvision and transformers exist: its process may import
attn_assets.core and nothing that needs Dagster, DuckDB or pandas.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("dagster", "duckdb", "pandas", "pyarrow")



def _unimportable(folder: Path) -> Path:
    """A folder of stand-ins for the forbidden packages that fail on import, as on the GPU machine."""
    for name in FORBIDDEN:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed on the GPU machine')\n")
    return folder


def test_cpu_smoke_runs_every_section_without_errors(tmp_path):
    out = tmp_path / "rows.json"
    blocked = _unimportable(tmp_path / "blocked")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)])}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["errors"] == [], report["errors"]
    sections = {row[0] for row in report["rows"]}
    assert {"env", "setup", "cpu", "model", "capture", "deviation", "end_to_end", "device_decode"} <= sections
    end_to_end = [row for row in report["rows"] if row[0] == "end_to_end"]
    assert any("zip" in row[1] for row in end_to_end) and all("failures 0" in row[2] for row in end_to_end)
    assert "| model | bf16 batch 2 |" in done.stdout


def test_gpu_check_script_calls_the_check_with_the_tree_on_the_path():
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert "PYTHONPATH" in script and "benchmarks/gpu_check.py" in script
