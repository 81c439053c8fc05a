"""Data: tar shards (`tario`), shard specs (`sources`), `shards make` (`shards`), media
decode/encode (`media`), array import (`arrays`) and DataLoader batches (`batches`).

Imports no other wing.
"""
