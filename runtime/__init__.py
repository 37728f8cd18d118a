"""runtime: the composition root. Assembles the request path, the API, storage and collectors into
processes (serve, workers, collector), and owns their lifecycle (start, drain, rolling restart)."""
