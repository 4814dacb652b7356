"""One benchmark scenario per module; each registers itself with ``@scenario`` (see
``benchmarks/README.md``)."""
