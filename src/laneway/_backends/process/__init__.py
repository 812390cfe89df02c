"""laneway's own process pool: ``pool`` is the parent side, ``worker`` the child loop,
``messages`` the wire format between them."""
