"""Live, structured turns run on the session's model-gateway fleet (tests/support/gateway_fleet.py:
the worker image's REAL `claude` against the model stand-in, on network none)."""
