"""Redis databases served over KeyValueService: typed commands, pipelines, pub/sub.

The gRPC adapter is db_service.keyvalue.servicer (not imported here: settings import this
package, and the servicer imports the settings).
"""

from db_service.keyvalue.databases import KeyValueDatabases
from db_service.keyvalue.errors import DataConflict, ReplyTooLarge, TransactionAborted
from db_service.keyvalue.settings import KeyValueSettings, RedisDatabaseSettings, RedisTarget
from db_service.keyvalue.store import KeyValueStore

__all__ = [
    "DataConflict",
    "KeyValueDatabases",
    "KeyValueSettings",
    "KeyValueStore",
    "RedisDatabaseSettings",
    "RedisTarget",
    "ReplyTooLarge",
    "TransactionAborted",
]
