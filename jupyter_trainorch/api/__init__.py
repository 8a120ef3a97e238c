"""REST API and push channel (jupyter_server extension and ``trainorch serve``)."""
