"""``python -m api_service``: serve ApiService until SIGTERM / SIGINT."""

import sys

from api_service.app import ApiApp
from paca_runtime import run

if __name__ == "__main__":
    sys.exit(run("api_service", ApiApp.from_settings))
