"""MongoDB databases served over DocumentService, through pymongo's asyncio client.

The gRPC adapter is db_service.document.servicer (not imported here: settings import this
package, and the servicer imports the settings).
"""

from db_service.document.backend import MongoBackend, UpdateResult
from db_service.document.batches import Batch, BatchLimits
from db_service.document.config import MongoDatabaseSettings, mongo_database
from db_service.document.databases import DocumentDatabases

__all__ = [
    "Batch",
    "BatchLimits",
    "DocumentDatabases",
    "MongoBackend",
    "MongoDatabaseSettings",
    "UpdateResult",
    "mongo_database",
]
