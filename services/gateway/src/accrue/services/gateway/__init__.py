"""The REST gateway: REST/JSON in, gRPC out, with routes from the protos' google.api.http rules.

`bootstrap.build_app` is the composition root; `python -m accrue.services.gateway` serves it.
"""
