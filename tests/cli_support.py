"""Runs the command line as a person would: `python -m explorer ...` in a subprocess, from the project root."""
import subprocess
import sys

from tests.conftest import ROOT


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
