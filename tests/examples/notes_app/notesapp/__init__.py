"""Notes: a small Flask app that is NOT the shop (second example monolith for the kit's tests)."""
