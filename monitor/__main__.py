"""``python -m monitor``: serve until SIGTERM or SIGINT."""

import sys

from monitor.app import build
from paca_runtime.process import run

sys.exit(run("monitor", build))
