"""The RabbitMQ backend: durable quorum queues, manual acks, publisher confirms, a TTL retry queue, a dead-letter queue.

``broker`` (the :class:`~ttg.broker.Broker`), ``topology`` (its queues), ``wire`` (batch framing), ``amqp_client``
(the connection thread), ``status`` (``ttg status``), ``server`` (a private rabbitmq-server node). Importing this
package imports no driver; ``SPEC`` names the modules, loaded when used.
"""

from ttg.brokers.spec import BackendSpec

# rabbitmqctl's "close every client connection, with this reason": the partition's "reconnect now".
CUT_CLIENTS = ("close_all_connections", "ttg partition-broker: reconnect through the network policy")

SPEC = BackendSpec(
    "rabbitmq",
    "pika",
    ("amqp", "amqps"),
    5672,
    "ttg.brokers.rabbitmq.broker:RabbitMQBroker",
    "ttg.brokers.rabbitmq.amqp_client:check_url",
    "ttg.brokers.rabbitmq.status:read",
    "ttg.brokers.rabbitmq.server:PrivateRabbitMQ",
    durable=True,  # durable quorum queues and persistent messages
    k8s_ports=(5672, 15672),  # AMQP, and the management API ttg status reads
    k8s_url="amqp://{user}:{password}@{host}:5672/%2F",
    k8s_template="rabbitmq.yaml.j2",
    k8s_cut_clients=("rabbitmqctl", *CUT_CLIENTS),
    management_plugin=True,
)
