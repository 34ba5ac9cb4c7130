"""At-least-once delivery: leases with ack/nack on in-memory streams,
consumer groups on durable streams, dead letters (see :mod:`.service`)."""

from .groups import ConsumerGroups
from .receipts import group_receipt, is_group_receipt, parse_group_receipt
from .service import AtLeastOnce, Settle

__all__ = ["AtLeastOnce", "ConsumerGroups", "Settle", "group_receipt", "is_group_receipt", "parse_group_receipt"]
