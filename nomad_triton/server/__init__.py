"""`nomad-triton serve`: a PyTriton inference server for a folder of model.toml models.

launcher.py (supervisor, signals, libpython) -> worker.py (PyTriton process) -> app.py/backends.py.
"""
