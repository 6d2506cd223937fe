"""A Python client of siasync: create jobs, follow them, and download their products as they come.

Two faces over one implementation: `Client` and `Job` (synchronous, for scripts and
notebooks) and `AsyncClient` and `AsyncJob` (coroutines and async iterators).

>>> from siasync.client import Client                                     # doctest: +SKIP
>>> client = Client("http://127.0.0.1:8000")
>>> job = client.submit(pos=[(150.1, 2.2), (150.3, 2.4)], size=0.05, format="ALL")
>>> for product in job.stream():        # each product as soon as it is made
...     print(product.field, product.id, product.size)
>>> job.fetch("out/")                    # or: everything, resumable, with table.xml

The client needs only httpx and the standard library.
"""

from __future__ import annotations

from siasync.client._async import AsyncClient, AsyncJob
from siasync.client._models import (
                                    FINAL,
                                    ClientError,
                                    JobRef,
                                    JobStatus,
                                    Product,
                                    Progress,
                                    ServiceError,
                                    TransferError,
)
from siasync.client._sync import Client, Job
from siasync.client.fetch import FetchProgress, fetch
from siasync.client.progress import ProgressPrinter

__all__ = ["FINAL", "AsyncClient", "AsyncJob", "Client", "ClientError", "FetchProgress", "Job", "JobRef", "JobStatus",
           "Product", "Progress", "ProgressPrinter", "ServiceError", "TransferError", "fetch"]
