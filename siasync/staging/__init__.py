"""The staging engine: the scheduler, the dispatcher, the worker pools and what runs in the workers."""
