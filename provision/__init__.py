"""goldbox's guest side: run one JSON plan (docs/contracts.md) to turn a fresh guest
into the golden Flask + uWSGI + nginx stack.

Runs with the guest's own interpreter, Python 2.6 (CentOS 6's) through 3.13, and the
standard library only. Knows nothing of packer, vagrant or TOML. Distribution
differences live in packages.py (apt | yum) and services.py (systemd | sysv)."""
