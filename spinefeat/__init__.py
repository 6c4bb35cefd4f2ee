"""spinefeat: classical, CPU-only grading of lumbar spine MRI (RSNA 2024 task)."""

__version__ = "0.1.0"
