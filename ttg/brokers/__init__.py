"""Broker backends, one package each (``redis/``, ``rabbitmq/``), registered in :mod:`ttg.backends`; open one
through :func:`ttg.broker.open_broker`."""
