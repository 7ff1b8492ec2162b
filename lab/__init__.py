"""The lab: code that only tests and benchmarks use (never installed, never imported by the product)."""
