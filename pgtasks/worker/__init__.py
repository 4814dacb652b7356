"""The worker: claim loop, execution pools, leases."""
