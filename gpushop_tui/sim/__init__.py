"""The marketplace twin: Vast.ai, TensorDock, Blue Lobster, RunPod and Lambda Cloud over real
loopback HTTP, and GPU nodes over real SSH (DESIGN.md §7).

Written from the API reference, never from the adapters: it imports only the base layer, so
adapter and simulator check each other.
"""
