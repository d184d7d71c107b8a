"""The extracted customers service: customer records, in its own database."""
