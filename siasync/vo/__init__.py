"""The VO protocols: synchronous SIAP 1.0 and VOSI."""
