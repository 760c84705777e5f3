"""Parsers of what a GPU node prints (nvidia-smi, ss, fuser), on real-looking outputs, and the
decisions the probe helpers take on each kind of answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from gpushop_tui.node.probes import (
    DPKG_COMMAND,
    GPU_COMMAND,
    GPU_QUERY,
    GpuReading,
    dpkg_lock_free,
    parse_cuda_version,
    parse_gpu_csv,
    parse_ssh_connections,
    read_spec,
    sample,
)
from gpushop_tui.node.ssh import CommandResult, NodeAddress, NodeConnection, NodeError

H100_X8 = "".join(
    f"{i}, NVIDIA H100 80GB HBM3, 81559, {4 + i * 1000}, {i * 10}, {33 + i}, {70.5 + i:.2f}, "
    "550.90.07\n"
    for i in range(8)
)

A100_MIXED = """\
0, NVIDIA A100-SXM4-80GB, 81920, 0, 0, 29, [N/A], 535.104.05
1, NVIDIA A100-SXM4-80GB, 81920, 40960, 100, 71, 398.12, 535.104.05

2, NVIDIA A100-SXM4-80GB, [N/A], N/A, [Not Supported], [Not Supported], N/A, N/A
"""

BANNER_550 = """\
Tue Mar 12 10:21:33 2024
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |                    0 |
| N/A   33C    P0             71W /  700W |       4MiB /  81559MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+
|   1  NVIDIA H100 80GB HBM3          On  |   00000000:2A:00.0 Off |                    0 |
| N/A   35C    P0             73W /  700W |       4MiB /  81559MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |
|        ID   ID                                                               Usage      |
|=========================================================================================|
|  No running processes found                                                             |
+-----------------------------------------------------------------------------------------+
"""

BANNER_470 = """\
Mon Nov 22 17:04:11 2021
+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.82.01    Driver Version: 470.82.01    CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+
| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |
|===============================+======================+======================|
|   0  NVIDIA GeForce ...  Off  | 00000000:01:00.0 Off |                  N/A |
| 30%   41C    P8    22W / 350W |      1MiB / 24268MiB |      0%      Default |
+-------------------------------+----------------------+----------------------+
"""

SS_WITH_HEADER = """\
Recv-Q Send-Q         Local Address:Port          Peer Address:Port Process
0      0                 172.17.0.2:22           203.0.113.7:51234
0      36                172.17.0.2:22          198.51.100.9:40022
0      0      [2001:db8:10::5]:22      [2001:db8:ffff::1]:61002
0      0      [::ffff:172.17.0.2]:22     [::ffff:192.0.2.44]:50110
"""


def test_query_asks_for_the_reading_fields_in_order() -> None:
    assert GPU_QUERY == (
        "index,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,"
        "driver_version"
    )
    assert GPU_COMMAND.endswith(f"--query-gpu={GPU_QUERY} --format=csv,noheader,nounits")


def test_parse_eight_h100s() -> None:
    gpus = parse_gpu_csv(H100_X8)
    assert [g.index for g in gpus] == list(range(8))
    assert {g.name for g in gpus} == {"NVIDIA H100 80GB HBM3"}
    assert gpus[3] == GpuReading(
        index=3,
        name="NVIDIA H100 80GB HBM3",
        memory_total_mib=81559,
        memory_used_mib=3004,
        utilization_pct=30.0,
        temperature_c=36.0,
        power_w=73.5,
        driver="550.90.07",
    )


def test_parse_not_available_values_as_none() -> None:
    gpus = parse_gpu_csv(A100_MIXED)
    assert len(gpus) == 3
    assert gpus[0].power_w is None
    assert gpus[0].utilization_pct == 0.0
    assert gpus[1].power_w == pytest.approx(398.12)
    assert gpus[1].memory_used_mib == 40960
    assert gpus[2] == GpuReading(2, "NVIDIA A100-SXM4-80GB", None, None, None, None, None, None)


def test_parse_values_that_still_carry_units() -> None:
    [gpu] = parse_gpu_csv("0, NVIDIA L40S, 46068 MiB, 310 MiB, 12 %, 40, 88.25 W, 550.54.15\n")
    assert (gpu.memory_total_mib, gpu.memory_used_mib) == (46068, 310)
    assert (gpu.utilization_pct, gpu.power_w) == (12.0, 88.25)


def test_parse_empty_output_is_no_gpus() -> None:
    assert parse_gpu_csv("") == []
    assert parse_gpu_csv("\n\n") == []


@pytest.mark.parametrize(
    "text",
    [
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n",
        "0, NVIDIA H100 80GB HBM3, 81559, 4, 0, 33, 70.50\n",
        "0, NVIDIA H100 80GB HBM3, 81559, 4, 0, 33, 70.50, 550.90.07, extra\n",
        "0, NVIDIA H100 80GB HBM3, lots, 4, 0, 33, 70.50, 550.90.07\n",
        "GPU0, NVIDIA H100 80GB HBM3, 81559, 4, 0, 33, 70.50, 550.90.07\n",
        "0, [N/A], 81559, 4, 0, 33, 70.50, 550.90.07\n",
        "index, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%], "
        "temperature.gpu, power.draw [W], driver_version\n",
    ],
)
def test_parse_refuses_malformed_lines(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gpu_csv(text)


def test_cuda_version_from_banners() -> None:
    assert parse_cuda_version(BANNER_550) == 12.4
    assert parse_cuda_version(BANNER_470) == 11.4
    assert (
        parse_cuda_version(
            "| NVIDIA-SMI 580.65.06  Driver Version: 580.65.06  CUDA Version: 13.0 |"
        )
        == 13.0
    )
    assert (
        parse_cuda_version("| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: N/A |")
        is None
    )
    assert parse_cuda_version("No devices were found\n") is None
    assert parse_cuda_version("") is None


def test_ssh_connections_with_header_and_ipv6_peers() -> None:
    assert parse_ssh_connections(SS_WITH_HEADER) == 4


def test_ssh_connections_without_header() -> None:
    body = SS_WITH_HEADER.split("\n", 1)[1]
    assert parse_ssh_connections(body) == 4
    assert (
        parse_ssh_connections("Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n") == 0
    )
    assert parse_ssh_connections("") == 0


def test_ssh_connections_count_only_the_local_port() -> None:
    text = (
        "Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n"
        "0      0      10.0.0.5:22        10.0.0.9:40000\n"
        "0      0      10.0.0.5:40022     192.0.2.1:22\n"
        "0      0      10.0.0.5:2222      10.0.0.9:40001\n"
    )
    assert parse_ssh_connections(text) == 1
    assert parse_ssh_connections(text, port=2222) == 1


def test_ssh_connections_with_a_state_column() -> None:
    text = (
        "State      Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n"
        "ESTAB      0      0         10.0.0.5:22     10.0.0.9:40000\n"
        "TIME-WAIT  0      0         10.0.0.5:22     10.0.0.9:39990\n"
        "ESTAB      0      0      [fe80::1%eth0]:22  [fe80::2%eth0]:40002\n"
    )
    assert parse_ssh_connections(text) == 2


@pytest.mark.parametrize(
    "text",
    [
        "Cannot open netlink socket: Permission denied\n",
        "0 0 10.0.0.5\n",
        "Recv-Q Send-Q Local Address:Port Peer Address:Port\nx y 10.0.0.5:22 10.0.0.9:1\n",
    ],
)
def test_ssh_connections_refuse_malformed_lines(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ssh_connections(text)


ADDRESS = NodeAddress("198.51.100.4", 22, "root", Path("k"))


@dataclass
class Scripted:
    """A connection that answers each command from a script (or raises what it says)."""

    answers: dict[str, CommandResult | NodeError]
    address: NodeAddress = ADDRESS
    asked: list[str] = field(default_factory=list)

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        self.asked.append(command)
        for prefix, answer in self.answers.items():
            if command.startswith(prefix):
                if isinstance(answer, NodeError):
                    raise answer
                return answer
        return CommandResult("", f"bash: line 1: {command.split()[0]}: command not found\n", 127)


def as_conn(script: Scripted) -> NodeConnection:
    """A `Scripted` where the helpers expect a connection (they only use run and address)."""
    return cast(NodeConnection, script)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (CommandResult("", "", 1), True),
        (CommandResult(" 2417 2417", "/var/lib/dpkg/lock-frontend:/var/lib/dpkg/lock:", 0), False),
        (CommandResult("", "bash: line 1: fuser: command not found\n", 127), None),
        (CommandResult("", "fuser: cannot stat\n", 1), True),
        (CommandResult("", "", 0), None),
    ],
)
async def test_dpkg_lock_free_decisions(answer: CommandResult, expected: bool | None) -> None:
    conn = Scripted({DPKG_COMMAND: answer})
    assert await dpkg_lock_free(as_conn(conn)) is expected
    assert conn.asked == [DPKG_COMMAND]


async def test_sample_turns_each_unreadable_part_into_a_problem() -> None:
    conn = Scripted(
        {
            "nvidia-smi": NodeError("timeout", "nvidia-smi on 198.51.100.4:22 did not finish."),
            "ss ": CommandResult("", "bash: line 1: ss: command not found\n", 127),
        }
    )
    got = await sample(as_conn(conn))
    assert got.gpus is None
    assert got.ssh_connections is None
    assert len(got.problems) == 2
    assert "did not finish" in got.problems[0]
    assert "ss: command not found" in got.problems[1]


async def test_sample_subtracts_our_own_connection_and_never_goes_below_zero() -> None:
    ours = "0 0 10.0.0.5:22 10.0.0.9:40000\n"
    gpu = CommandResult("0, NVIDIA GeForce RTX 4090, 24564, 1, 3, 30, 20.00, 550.54.15\n", "", 0)
    for listing, others in ((ours * 3, 2), (ours, 0), ("", 0)):
        got = await sample(
            as_conn(Scripted({"nvidia-smi": gpu, "ss ": CommandResult(listing, "", 0)}))
        )
        assert got.ssh_connections == others
        assert got.problems == ()
        assert got.gpus is not None
        assert got.gpus[0].utilization_pct == 3.0


async def test_sample_reports_garbage_and_failures_without_raising() -> None:
    conn = Scripted(
        {
            "nvidia-smi": CommandResult("", "No devices were found\n", 6),
            "ss ": CommandResult("Cannot open netlink socket: Permission denied\n", "", 0),
        }
    )
    got = await sample(as_conn(conn))
    assert (got.gpus, got.ssh_connections) == (None, None)
    assert "exit 6: No devices were found" in got.problems[0]
    assert "netlink" in got.problems[1]


async def test_sample_lets_a_dropped_connection_through() -> None:
    dropped = NodeError("closed", "the SSH connection to 198.51.100.4:22 dropped.")
    with pytest.raises(NodeError) as caught:
        await sample(as_conn(Scripted({"nvidia-smi": dropped, "ss ": dropped})))
    assert caught.value.kind == "closed"


async def test_read_spec_fails_with_nvidia_smi_stderr() -> None:
    conn = Scripted(
        {
            "nvidia-smi": CommandResult(
                "",
                "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
                9,
            )
        }
    )
    with pytest.raises(NodeError) as caught:
        await read_spec(as_conn(conn))
    assert caught.value.kind == "command"
    assert "exit 9" in str(caught.value)
    assert "couldn't communicate with the NVIDIA driver" in str(caught.value)


async def test_read_spec_takes_the_driver_from_the_banner_when_rows_lack_it() -> None:
    rows = CommandResult("0, NVIDIA H100 80GB HBM3, 81559, 4, 0, 33, 70.5, [N/A]\n", "", 0)
    conn = Scripted({GPU_COMMAND: rows, "nvidia-smi": CommandResult(BANNER_550, "", 0)})
    spec = await read_spec(as_conn(conn))
    assert spec.driver == "550.54.15"
    assert spec.cuda == 12.4
    assert [g.name for g in spec.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert conn.asked == [GPU_COMMAND, "nvidia-smi"]
