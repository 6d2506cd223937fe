"""siasync: asynchronous image staging for survey astronomy (SIAP 1.0 + UWS 1.1)."""

__version__ = "0.1.0"
