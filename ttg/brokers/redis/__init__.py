"""The Redis Streams backend: consumer groups, XREADGROUP / XACK / XAUTOCLAIM, Lua scripts for every multi-key step.

``broker`` (the :class:`~ttg.broker.Broker`), ``lua`` (its scripts), ``status`` (``ttg status``), ``server`` (a
private redis-server). Importing this package imports no driver; ``SPEC`` names the modules, loaded when used.
"""

from ttg.brokers.spec import BackendSpec

# Close every normal client connection (the workers' and the coordinator's; not replicas or pub/sub): the
# partition's "reconnect now". The reply is the number of clients closed.
CUT_CLIENTS = ("CLIENT", "KILL", "TYPE", "normal")

SPEC = BackendSpec(
    "redis",
    "redis",
    ("redis", "rediss"),
    6379,
    "ttg.brokers.redis.broker:RedisStreamsBroker",
    "ttg.brokers.redis.client:check_url",
    "ttg.brokers.redis.status:read",
    "ttg.brokers.redis.server:PrivateRedis",
    durable=False,  # without AOF a restarted redis-server is empty
    k8s_ports=(6379,),
    k8s_url="redis://:{password}@{host}:6379/0",
    k8s_template="redis.yaml.j2",
    k8s_cut_clients=("sh", "-c", 'exec redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ' + " ".join(CUT_CLIENTS)),
    round_trips="ttg.brokers.redis.status:round_trips",
)
