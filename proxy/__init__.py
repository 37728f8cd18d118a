"""proxy: the request path only. One call from the client through a provider adapter to the
upstream and back, and the span that records it."""
