"""Message consumers that apply each message's effect once (NATS JetStream, RabbitMQ).

The same behaviour as the Rust crate ``idem-broker`` (docs/brokers.md): the
key comes from a header or a JSON body field, it is claimed with
``IDEM.BEGIN`` and a lease before the handler runs, the result is committed
and only then the delivery acked; a done duplicate is acked unrun, a key in
flight elsewhere comes back after a delay, a failed handler's record is
aborted and the message retried with backoff, and past the delivery limit it
is dead-lettered. Records live on an idem server (:class:`Adapter`) or in the
handler's own database transaction (:class:`PostgresInbox`,
:class:`MysqlInbox`). Broker modules: :mod:`.nats` (nats-py),
:mod:`.amqp` (aio-pika), imported on demand.
"""

from ._core import (
    Ack,
    Action,
    Adapter,
    DeadLetter,
    Delivery,
    KeyError_,
    KeySource,
    Message,
    MysqlInbox,
    PermanentFailure,
    PostgresInbox,
    Process,
    Redeliver,
    Release,
    RetryableFailure,
    Settings,
    Stats,
    Unguarded,
    run_deliveries,
)

__all__ = [
    "Ack",
    "Action",
    "Adapter",
    "DeadLetter",
    "Delivery",
    "KeyError_",
    "KeySource",
    "Message",
    "MysqlInbox",
    "PermanentFailure",
    "PostgresInbox",
    "Process",
    "Redeliver",
    "Release",
    "RetryableFailure",
    "Settings",
    "Stats",
    "Unguarded",
    "run_deliveries",
]
