"""Every storage backend, and the only place SQL or Cypher is written.

``sql.py`` is the connection layer (the portable SQL dialect and its rules), ``base.py`` the protocols
the engine asks of a backend. See each module's docstring.
"""
