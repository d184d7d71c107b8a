"""Standalone scripts run in an app's OWN interpreter (see kit.appenv.run_app_script).

They import only the standard library and what the app itself has (flask, sqlalchemy,
alembic), never the kit (an import-linter contract keeps it so), and print one JSON document.
"""
