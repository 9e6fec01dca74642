"""The README is how strangers use Taskstream: it must name every setting."""
from pathlib import Path

from tasks.config import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in README]
    assert not missing, f"README.md does not document {missing}"


def test_the_two_commands_are_there():
    assert "make run" in README and "make test" in README
