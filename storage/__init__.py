"""Persistence for siasync: the job store and staged result files.

This package never imports litestar or siasync (see DESIGN.md).
"""
