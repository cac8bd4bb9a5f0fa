"""goldbox: build, boot, verify and share golden Vagrant boxes of a Flask + uWSGI + nginx stack."""

from pathlib import Path

# The repository root: templates, platforms/ and app/ are found relative to it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
