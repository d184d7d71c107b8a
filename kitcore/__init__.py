"""The small core the kit's product packages share (`kit`, `cdc`, `parity`, `strangler_proxy`).

It imports none of them and nothing of the example shop: an engine factory, JSON byte scans
and loopback helpers. A team installs it with the kit; the shop's own helpers live in
`shoplib`, which the product never imports.
"""
