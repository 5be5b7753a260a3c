"""Proto rendering shared by several layers: rows and values to messages, once each.

Below rpc, streams, loops and domain, so each of them may render without importing a
layer above it; it imports only store rows and the generated messages.
"""
