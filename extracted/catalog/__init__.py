"""The extracted catalog service: categories and products, in its own database."""
