"""A small shared web library used by the monolith and by every extracted service.

It holds what both sides of the migration must do *identically* for clients not to tell them
apart: error bodies, pagination envelopes, timestamp and money formats, health endpoints.
It knows nothing about the shop.
"""
