"""Benchmarks behind `vqtok bench`: kernels, quantizer, pipeline, Ray encoding, training,
and the peak-memory helpers they share (`memory`).

Sits on top: may import every other wing. `bench.kernels` imports with torch alone, for GPU
machines without the media packages.
"""
