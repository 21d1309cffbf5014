"""The Faust stream worker: per-user context table, item table, trigger handling."""
