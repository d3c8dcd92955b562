"""Latency reports for Spark VTuber: `python -m perf` (see perf/README.md).

Everything here measures; nothing here serves. The models are reached through Triton's gRPC
protocol like the client reaches them, plus the same engines in-process and llama.cpp's own
server for the side-by-side ratios.
"""
