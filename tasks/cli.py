"""``flask --app server tasks ...``: the command-line client (being built)."""
from __future__ import annotations

import click

tasks_cli = click.Group("tasks", help="Start, follow and inspect Taskstream tasks.")
