"""``python -m db_service``: serve DbService until SIGTERM / SIGINT."""

import sys

from db_service.app import DbApp
from paca_runtime import run

if __name__ == "__main__":
    sys.exit(run("db_service", DbApp.from_settings))
