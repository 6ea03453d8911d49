"""Which rank `workbench run` names when a distributed stage fails: read from torchrun's own failure summary (made
here by torch's ChildFailedError, as torchrun prints it) and the one-line errors the ranks wrote."""

from __future__ import annotations

from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from workbench.runner.launch import failure_line

GLOO_PEER_LOST = (
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer "
    "[127.0.0.1]:29500. Check the logs of the remote worker before reporting an error. GLHF!"
)


def summary(*failures: tuple[int, int]) -> list[str]:
    """torchrun's closing summary for (rank, exit code) failures, the first one observed first."""
    processes = {}
    for order, (rank, code) in enumerate(failures):
        process = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=code, error_file="/nonexistent")
        process.timestamp = 1_000_000 + order
        processes[rank] = process
    return ChildFailedError("workbench.runner.worker", processes).format_msg().splitlines()


def spec_with_errors(tmp_path: Path, **errors: str) -> Path:
    for rank, text in errors.items():
        (tmp_path / f"{rank}.error").write_text(text + "\n", encoding="utf-8")
    return tmp_path / "spec.json"


def test_a_killed_rank_is_named_though_its_peer_lost_it_first(tmp_path):
    # rank 0's collective broke when rank 1 was killed, and torchrun happened to observe rank 0 first
    spec = spec_with_errors(tmp_path, rank0=GLOO_PEER_LOST)
    assert failure_line(spec, summary((0, 1), (1, -9)), 1) == "rank 1 was killed by SIGKILL"


def test_a_rank_with_its_own_error_is_named_before_ranks_the_launcher_stopped(tmp_path):
    spec = spec_with_errors(tmp_path, rank1="ValueError: data/train.jsonl:3: no messages")
    lines = summary((0, -15), (1, 1))
    assert failure_line(spec, lines, 1) == "rank 1 failed: ValueError: data/train.jsonl:3: no messages"


def test_the_first_observed_failure_is_named_when_every_failure_is_a_consequence(tmp_path):
    spec = spec_with_errors(tmp_path, rank0=GLOO_PEER_LOST, rank1=GLOO_PEER_LOST)
    assert failure_line(spec, summary((1, 1), (0, 1)), 1) == f"rank 1 failed: {GLOO_PEER_LOST}"


def test_the_root_cause_is_named_when_it_is_not_a_consequence(tmp_path):
    spec = spec_with_errors(tmp_path, rank0="KeyError: 'messages'", rank1=GLOO_PEER_LOST)
    assert failure_line(spec, summary((0, 1), (1, 1)), 1) == "rank 0 failed: KeyError: 'messages'"
    assert failure_line(spec_with_errors(tmp_path / "x"), summary((2, -11)), 1) == "rank 2 was killed by SIGSEGV"


def test_without_a_summary_the_rank_errors_or_the_launchers_last_line_are_named(tmp_path):
    spec = spec_with_errors(tmp_path, rank0=GLOO_PEER_LOST, rank1="OSError: disk full")
    assert failure_line(spec, ["starting"], 1) == "rank 1 failed: OSError: disk full"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert failure_line(empty / "spec.json", ["", "address in use"], 2) == "the launcher exited with 2: address in use"
