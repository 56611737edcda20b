"""Durable webhook events and their delivery leases per consumer group (EventStoreService)."""

from db_service.events.servicer import SERVICE_NAME, EventStoreServicer
from db_service.events.store import ClaimResult, EventStore

__all__ = ["SERVICE_NAME", "ClaimResult", "EventStore", "EventStoreServicer"]
