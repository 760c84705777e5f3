"""The marketplace twin: Vast.ai, TensorDock and Blue Lobster over real loopback HTTP, and GPU
nodes over real SSH (DESIGN.md §7).

Written from the API reference, never from the adapters: it imports only the base layer, so
adapter and simulator check each other.
"""
