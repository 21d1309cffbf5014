"""Scoring pools: processes that consume score requests as a consumer group, score with
the transformer, rank and publish recommendations."""
