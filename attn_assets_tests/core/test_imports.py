import subprocess
import sys


def test_core_does_not_import_dagster():
    code = "import sys, attn_assets.core; sys.exit(1 if any(m.split('.')[0] == 'dagster' for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
