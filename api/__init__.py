"""HTTP edges: Starlette routes, authentication, error mapping and the composition root."""
