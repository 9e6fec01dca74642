import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_tasks_package_passes_mypy_strict():
    """STYLE.md: tasks/ passes ``mypy --strict`` (settings in mypy.ini)."""
    result = subprocess.run([sys.executable, "-m", "mypy", "tasks"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
