"""Jobs over shards: `encode`, `decode`, export-tokens (`tokens`), code samples (`codes`),
what the jobs share (`common`) and the Ray engine (`ray_engine`).

Imports the data wing only.
"""
