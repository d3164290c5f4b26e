"""Broker backends, one module each; load them through :func:`ttg.broker.open_broker`."""
