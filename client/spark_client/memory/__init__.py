"""Long-term memory: the store (ChromaDB), recall scoring, and the `spark-client memory` commands."""

from spark_client.memory.recall import Recalled, RecallOptions
from spark_client.memory.records import MemoryKind, MemoryRecord
from spark_client.memory.service import Embedder, Memory

__all__ = ["Embedder", "Memory", "MemoryKind", "MemoryRecord", "RecallOptions", "Recalled"]
