"""Server-rendered pages: the public ranking, policy pages, and the signed-in dashboard (``/me/``)."""
