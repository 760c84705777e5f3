"""The node edge: SSH to rented GPU boxes (asyncssh), what we ask them, and session key files."""

from gpushop_tui.node.keys import (
    create_key_pair,
    known_hosts_line,
    public_key_line,
    write_known_hosts,
)
from gpushop_tui.node.probes import (
    GPU_QUERY,
    GpuReading,
    NodeSample,
    NodeSpec,
    dpkg_lock_free,
    echo_ok,
    parse_cuda_version,
    parse_gpu_csv,
    parse_ssh_connections,
    read_spec,
    sample,
)
from gpushop_tui.node.ssh import CommandResult, NodeAddress, NodeConnection, NodeError, connect

__all__ = [
    "GPU_QUERY",
    "CommandResult",
    "GpuReading",
    "NodeAddress",
    "NodeConnection",
    "NodeError",
    "NodeSample",
    "NodeSpec",
    "connect",
    "create_key_pair",
    "dpkg_lock_free",
    "echo_ok",
    "known_hosts_line",
    "parse_cuda_version",
    "parse_gpu_csv",
    "parse_ssh_connections",
    "public_key_line",
    "read_spec",
    "sample",
    "write_known_hosts",
]
