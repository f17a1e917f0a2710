"""Process-level settings that make CPU training faster without changing its results."""

from rlsd.runtime.allocator import keep_freed_memory

__all__ = ["keep_freed_memory"]
