"""The database boundary: connections, the embedded server, named queries, migrations, the store."""
