"""Read replicas, health checks and failover for a database (PostgreSQL, MySQL/MariaDB).

Modules: ``health`` (fall/rise counting), ``probes`` (one query per host on its own
connection), ``lag`` (replica lag from WAL positions), ``positions`` (consistency tokens),
``policies`` (round robin, least outstanding, latency EWMA), ``readpref`` (a request's read
preference), ``replicaset`` (hosts, probe rounds, primary election, choosing hosts) and
``routed`` (the :class:`~db_service.backends.base.Backend` over a replica set).

gRPC health: each database is the health service ``paca.db.v1.DbService/<database>``, SERVING
while a primary is in rotation (writes can succeed), and ``paca.db.v1.DbService/<database>/read``,
SERVING while any host is (reads can succeed). A database without replicas is SERVING under
both while the process serves.
"""

from db_service.routing.health import HealthCounter, Transition
from db_service.routing.policies import POLICIES, LatencyAware, LeastOutstanding, RoundRobin
from db_service.routing.positions import make_token, parse_token, reached
from db_service.routing.readpref import ReadOptions, read_options
from db_service.routing.replicaset import ReplicaSet, RoutingOptions
from db_service.routing.routed import RoutedBackend, consistency_token, host_figures

__all__ = [
    "POLICIES",
    "HealthCounter",
    "LatencyAware",
    "LeastOutstanding",
    "ReadOptions",
    "ReplicaSet",
    "RoundRobin",
    "RoutedBackend",
    "RoutingOptions",
    "Transition",
    "consistency_token",
    "host_figures",
    "make_token",
    "parse_token",
    "reached",
    "read_options",
]
