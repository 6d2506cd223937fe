"""The UWS 1.1 job service: parameters, the phase machine, documents, events and the /async routes."""
